// Entry point of a shard worker thread. Node 20 has no type stripping and tsx's loader does not
// reach worker threads by itself, so register it here before loading the TypeScript actor.
import { register } from 'tsx/esm/api';

register();
await import('../src/shard/worker.ts');
