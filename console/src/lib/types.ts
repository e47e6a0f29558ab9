// The API's shapes, as GET /openapi.json describes them.

export interface TestState {
  state: 'untested' | 'ok' | 'failed' | string;
  last_tested_at: string | null;
  latency_ms: number | null;
  server_version: string | null;
  error: string | null;
}

/** A connection's live status in the server: idle, connected, reconnecting, disconnected or error. */
export interface LiveState {
  state: string;
  since: string;
  error_class: string | null;
  error: string | null;
}

export interface ConnectionSummary {
  id: string;
  name: string;
  source_type: string;
  status: TestState;
  live: LiveState;
  owner: string;
  visibility: string;
  tables: number;
  tables_cached: number;
  oldest_fetch_at: string | null;
  created_at: string;
  updated_at: string;
}

export interface ConnectionDetails extends ConnectionSummary {
  config: Record<string, unknown>;
}

export interface TableFreshness {
  refresh_mode: string;
  last_refresh_kind: string | null;
  last_refresh_at: string | null;
  last_refresh_rows: number | null;
  last_refresh_ms: number | null;
  age_seconds: number | null;
  next_refresh_at: string | null;
  cache_files: number | null;
  last_error: string | null;
  last_error_at: string | null;
}

export interface TableInfo {
  schema: string;
  name: string;
  table_type: string;
  row_estimate: number | null;
  byte_estimate: number | null;
  access_mode: string;
  options: Record<string, unknown>;
  columns: number;
  column_types: { name: string; source_type: string; arrow_type: string; nullable: boolean }[];
  cached: boolean;
  cache: { rows: number; bytes: number; fetched_at: string; version: number; memory_bytes: number } | null;
  freshness: TableFreshness;
}

/** A JSON Schema property of a source type's config, as GET /source-types gives it. */
export interface ConfigProperty {
  type: string | string[];
  title: string;
  description: string;
  default?: unknown;
  enum?: string[];
  writeOnly?: boolean;
  format?: string;
  'x-advanced'?: boolean;
  'x-order'?: number;
}

export interface SourceTypeInfo {
  source_type: string;
  title: string;
  config_schema: {
    title: string;
    properties: Record<string, ConfigProperty>;
    required: string[];
  };
}

export interface TestReport {
  ok: boolean;
  server_version: string | null;
  latency_ms: number | null;
  error: string | null;
  field?: string;
}
