// How the console writes times, sizes and counts.

/** "3 min ago" for an RFC 3339 time. */
export function ago(time: string | null | undefined, now = Date.now()): string {
  if (!time) return 'never';
  const secs = Math.max(0, Math.round((now - Date.parse(time)) / 1000));
  if (secs < 60) return `${secs} s ago`;
  if (secs < 3600) return `${Math.round(secs / 60)} min ago`;
  if (secs < 86400) return `${Math.round(secs / 3600)} h ago`;
  return `${Math.round(secs / 86400)} d ago`;
}

/** "1.2 MB" for a byte count. */
export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** A count with thousands separators. */
export const count = (n: number | null | undefined) => (n === null || n === undefined ? '' : n.toLocaleString('en'));
