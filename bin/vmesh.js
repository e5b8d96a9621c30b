#!/usr/bin/env node
// The vmesh command. vmesh runs from its TypeScript sources: register the tsx loader, then hand over.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
