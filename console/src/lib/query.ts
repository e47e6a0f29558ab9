// Runs one statement through POST /query as newline-delimited JSON, handing rows over as
// they arrive, up to a cap; aborting the request stops the query on the server.
import { call } from './api';
import { pieces } from './stream';

export interface Column {
  name: string;
  type: string;
  nullable: boolean;
}

export interface Streamed {
  columns: Column[];
  rows: unknown[][];
  /** Whether rows past the cap were left unread (the query was stopped there). */
  capped: boolean;
}

/**
 * Runs `sql`, calling `onrows` with each chunk of rows (and once with the columns, with no
 * rows) until the result ends or `cap` rows have arrived.
 */
export async function streamQuery(
  sql: string,
  cap: number,
  signal: AbortSignal,
  onrows: (columns: Column[], rows: unknown[][]) => void,
): Promise<Streamed> {
  const response = await call('POST', '/query', { sql }, { signal, headers: { Accept: 'application/x-ndjson' } });
  let columns: Column[] | null = null;
  const rows: unknown[][] = [];
  for await (const lines of pieces(response, '\n')) {
    const fresh: unknown[][] = [];
    for (const line of lines) {
      if (!line) continue;
      const parsed = JSON.parse(line);
      if (columns === null) {
        columns = parsed.columns as Column[];
        onrows(columns, []);
      } else if (rows.length + fresh.length < cap) {
        fresh.push(parsed as unknown[]);
      }
    }
    if (fresh.length) {
      rows.push(...fresh);
      onrows(columns!, fresh);
    }
    // Leaving the loop cancels the body, which stops the query.
    if (rows.length >= cap) return { columns: columns!, rows, capped: true };
  }
  return { columns: columns ?? [], rows, capped: false };
}
