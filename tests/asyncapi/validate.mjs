// Parses an AsyncAPI document with the AsyncAPI parser and fails on any error-level
// diagnostic (warnings are printed). Usage: node validate.mjs FILE
import { readFileSync } from 'node:fs';
import { Parser } from '@asyncapi/parser';

const file = process.argv[2];
if (!file) {
  console.error('usage: node validate.mjs FILE');
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(file, 'utf8'), { source: file });
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics) {
  const level = ['error', 'warning', 'info', 'hint'][d.severity] ?? d.severity;
  console.log(`${level}: ${d.code}: ${d.message} at /${d.path.join('/')}`);
}
if (errors.length > 0 || !document) {
  console.error(`${file}: ${errors.length} error(s)`);
  process.exit(1);
}
const channels = document.channels().all().map((c) => c.id());
const messages = document.allMessages().all().length;
console.log(`${file}: valid AsyncAPI ${document.version()}: channels ${channels.join(', ')}; ${messages} messages`);
