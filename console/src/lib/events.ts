// The server's event stream (GET /events, server-sent events), read with fetch so that the
// token travels in a header rather than the URL.
import { call } from './api';
import { pieces } from './stream';

export interface EngineEvent {
  type: string;
  connection_id?: string;
  schema?: string;
  table?: string;
  rows?: number;
  bytes?: number;
  elapsed_ms?: number;
  row_estimate?: number | null;
  error?: string | null;
  [key: string]: unknown;
}

/** Calls `onevent` for each event until `signal` aborts. Resolves once subscribed. */
export async function followEvents(signal: AbortSignal, onevent: (event: EngineEvent) => void): Promise<void> {
  const response = await call('GET', '/events', undefined, { signal, headers: { Accept: 'text/event-stream' } });
  (async () => {
    try {
      for await (const messages of pieces(response, '\n\n')) {
        for (const message of messages) {
          const data = message
            .split('\n')
            .filter((line) => line.startsWith('data:'))
            .map((line) => line.slice(5).trimStart())
            .join('\n');
          if (data) onevent(JSON.parse(data));
        }
      }
    } catch {
      // Aborted, or the server went away: the page shows what it has.
    }
  })();
}
