// The REST API as the console calls it: the session token kept in sessionStorage (the only
// thing the console stores), every call authenticated with it, and a 401 from any call
// ending the session so that the user signs in again.

const TOKEN_KEY = 'quarry.token';

/** An error answer of the API: its code, message for people, and the field it concerns. */
export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public field?: string,
  ) {
    super(message);
  }
}

type Listener = () => void;
const signedOutListeners = new Set<Listener>();

/** Calls `listener` whenever the session ends (sign-out, or a token the server refused). */
export function onSignedOut(listener: Listener): () => void {
  signedOutListeners.add(listener);
  return () => signedOutListeners.delete(listener);
}

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function signOut(): void {
  sessionStorage.removeItem(TOKEN_KEY);
  signedOutListeners.forEach((l) => l());
}

/** Trades a user and password for a session token. */
export async function signIn(user: string, password: string): Promise<void> {
  const basic = btoa(unescape(encodeURIComponent(`${user}:${password}`)));
  const response = await fetch('/login', {
    method: 'POST',
    headers: { Authorization: `Basic ${basic}` },
  });
  if (!response.ok) throw await errorOf(response);
  const body = await response.json();
  sessionStorage.setItem(TOKEN_KEY, body.token);
}

async function errorOf(response: Response): Promise<ApiError> {
  try {
    const body = await response.json();
    const e = body.error ?? {};
    return new ApiError(response.status, e.code ?? 'error', e.message ?? response.statusText, e.field);
  } catch {
    return new ApiError(response.status, 'error', `${response.status} ${response.statusText}`);
  }
}

/** An authenticated call; resolves to the raw response once its status is a success. */
export async function call(
  method: string,
  path: string,
  body?: unknown,
  init: RequestInit = {},
): Promise<Response> {
  const headers: Record<string, string> = { ...(init.headers as Record<string, string>) };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    ...init,
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    signOut();
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

/** An authenticated call answered with JSON (or nothing, for 204). */
export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await call(method, path, body);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

/** A path segment, escaped. */
export const seg = (text: string) => encodeURIComponent(text);
