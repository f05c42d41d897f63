// `keel start` as a real process for the tests that need one (the CLI's own, the watchdog's): its
// output as it comes, and its exit.

import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const MAIN = join(ROOT, 'src/cli/main.ts');

export interface Done {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface Server {
  child: ChildProcess;
  url: string;
  /** What it printed so far (filled as it comes). */
  out: { stdout: string; stderr: string };
  exited: Promise<Done>;
}

/** Collects a child's output into `acc` and resolves with it when the child is gone. */
export function finished(child: ChildProcess, acc: { stdout: string; stderr: string }): Promise<Done> {
  child.stdout?.on('data', (d: Buffer) => (acc.stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (acc.stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, ...acc })));
}

/** Starts `keel start --port 0 --data DATA ARGS` and waits until its banner is printed whole. */
export async function startServer(data: string, args: string[] = [], env: Record<string, string> = {}): Promise<Server> {
  const child = spawn(process.execPath, ['--import=tsx', MAIN, 'start', '--port', '0', '--data', data, ...args], {
    cwd: ROOT,
    env: { ...process.env, KEEL_LOG_LEVEL: 'warn', ...env },
  });
  const out = { stdout: '', stderr: '' };
  const exited = finished(child, out);
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "listening on" line in 20 s:\n${out.stdout}\n${out.stderr}`)), 20_000);
    const look = (): void => {
      const m = /keel listening on (ws:\/\/\S+)/.exec(out.stdout);
      // The banner ends with the line on how to stop: wait for all of it.
      if (m !== null && /stop with Ctrl-C/.test(out.stdout)) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout?.on('data', look);
    void exited.then((done) => {
      clearTimeout(timer);
      reject(new Error(`keel start exited with ${done.code}:\n${done.stdout}\n${done.stderr}`));
    });
  });
  return { child, url, out, exited };
}
