// Closing an LMDB environment safely.
//
// lmdb-js 3.5 can crash the process (SIGSEGV in WriteWorker::Write -> notifyUserCallbacks on a
// freed environment) when an environment is closed right after its last flush while another
// environment of the same process is writing: the flush promise resolves before lmdb's write
// thread has finished its post-commit step. A reproduction crashed 6 of 6 processes within 1,500
// open/write/close cycles; letting the write thread finish (a short wait after the flush) made the
// crash disappear in our runs. Only shutdown and tests close environments, so the wait costs
// nothing on the commit path.

import type { RootDatabase } from 'lmdb';

const WRITE_THREAD_SETTLE_MS = 10;

export async function closeEnvironment(env: RootDatabase): Promise<void> {
  await env.flushed;
  await new Promise((resolve) => setTimeout(resolve, WRITE_THREAD_SETTLE_MS));
  await env.close();
}
