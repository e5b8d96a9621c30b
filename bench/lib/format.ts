/** Milliseconds with precision that suits their size: 0.043, 1.27, 12.4, 130. */
export function ms(value: number): string {
  if (!Number.isFinite(value)) return 'n/a';
  if (value < 1) return `${value.toFixed(3)} ms`;
  if (value < 10) return `${value.toFixed(2)} ms`;
  if (value < 100) return `${value.toFixed(1)} ms`;
  return `${Math.round(value)} ms`;
}

export function rate(perSecond: number): string {
  if (!Number.isFinite(perSecond)) return 'n/a';
  return `${Math.round(perSecond).toLocaleString('en-US')}/s`;
}

export function mib(value: number): string {
  return Number.isFinite(value) ? `${value.toFixed(1)} MiB` : 'n/a';
}

export function ratio(value: number): string {
  if (!Number.isFinite(value)) return 'n/a';
  return `${value < 10 ? value.toFixed(2) : value.toFixed(1)}x`;
}

export function count(value: number): string {
  return value.toLocaleString('en-US');
}

export type Row = readonly string[];

/** A plain-text table with aligned columns, for the terminal. */
export function textTable(header: Row, rows: readonly Row[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: Row) =>
    cells
      .map((cell, i) => cell.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** A GitHub-flavoured Markdown table. */
export function markdownTable(header: Row, rows: readonly Row[]): string {
  const line = (cells: Row) => `| ${cells.map((c) => c.replaceAll('|', '\\|')).join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/** A titled table: in the terminal under its title, in Markdown under a level-3 heading. */
export interface Table {
  title: string;
  header: Row;
  rows: Row[];
}

export function tableText(t: Table): string {
  return `${t.title}\n${textTable(t.header, t.rows)}`;
}

export function tableMarkdown(t: Table): string {
  return `### ${t.title}\n\n${markdownTable(t.header, t.rows)}`;
}
