// A raw PROTOCOL.md client for the change-feed tests: MessagePack over a bare ws socket, replies
// matched by id, pushes collected in order.

import WebSocket from 'ws';
import { Packr, Unpackr } from 'msgpackr';

export const packr = new Packr({ useRecords: false });
export const unpackr = new Unpackr({ useRecords: false, int64AsType: 'auto' } as unknown as ConstructorParameters<typeof Unpackr>[0]);

export type Message = Record<string, unknown>;

/** A raw protocol client that collects pushes. */
export class Raw {
  readonly pushes: Message[] = [];
  private readonly replies = new Map<number, (m: Message) => void>();
  private next = 1;
  private push_waiters: Array<() => void> = [];
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      const m = unpackr.unpack(data) as Message;
      if (typeof m.push === 'string') {
        this.pushes.push(m);
        const waiters = this.push_waiters;
        this.push_waiters = [];
        for (const w of waiters) w();
      } else this.replies.get(Number(m.id))?.(m);
    });
  }
  static async hello(url: string, token: string): Promise<Raw> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const raw = new Raw(ws);
    const hello = await raw.request({ op: 'hello', token });
    if (hello.error !== undefined) throw new Error(String(hello.message));
    return raw;
  }
  request(body: Message): Promise<Message> {
    const id = this.next++;
    return new Promise((resolve) => {
      this.replies.set(id, resolve);
      this.ws.send(packr.pack({ id, ...body }));
    });
  }
  /** Waits until `predicate` holds over the pushes received so far. */
  async until(predicate: (pushes: Message[]) => boolean, timeout_ms = 10_000): Promise<void> {
    const deadline = Date.now() + timeout_ms;
    while (!predicate(this.pushes)) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for pushes (have ${this.pushes.length})`);
      await new Promise<void>((resolve) => {
        this.push_waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  }
  close(): void {
    this.ws.close();
  }
}

export function ids(pushes: Message[]): bigint[] {
  const out: bigint[] = [];
  for (const p of pushes) {
    if (p.push !== 'events') continue;
    for (const transfer of p.transfers as Message[]) out.push(BigInt(transfer.id as number | bigint));
  }
  return out;
}
