import { existsSync, readFileSync, writeFileSync } from 'node:fs';

const PREAMBLE = `# Benchmarks

Measured with \`npm run bench\` (see bench/). Each section is rewritten by the benchmark that owns it;
the others are kept as they are.
`;

/**
 * Writes `body` under the level-2 `heading` of a Markdown file, replacing that section (up to the next
 * level-2 heading) if it exists, appending it otherwise, and keeping every other section.
 */
export function upsertSection(file: string, heading: string, body: string): void {
  const text = existsSync(file) ? readFileSync(file, 'utf8') : PREAMBLE;
  const lines = text.split('\n');
  const section = [`## ${heading}`, '', ...body.trimEnd().split('\n'), ''];
  const start = lines.findIndex((l) => l.trimEnd() === `## ${heading}`);
  if (start < 0) {
    while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    lines.push('', ...section);
  } else {
    const next = lines.findIndex((l, i) => i > start && l.startsWith('## '));
    lines.splice(start, (next < 0 ? lines.length : next) - start, ...section);
  }
  writeFileSync(file, `${lines.join('\n').trimEnd()}\n`);
}
