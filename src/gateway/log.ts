// The gateway's logger: pino as JSON lines on stderr (stdout belongs to the CLI's human output),
// quiet by default. KEEL_LOG_LEVEL picks the level: fatal, error, warn (default), info, debug,
// trace or silent.

import { pino, type Logger } from 'pino';

export type { Logger };

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

export function createLogger(level: string | undefined = process.env.KEEL_LOG_LEVEL): Logger {
  const chosen = level !== undefined && LEVELS.has(level) ? level : 'warn';
  const logger = pino({ level: chosen, base: { service: 'keel' } }, pino.destination({ fd: 2, sync: true }));
  if (level !== undefined && level !== '' && !LEVELS.has(level)) {
    logger.warn({ KEEL_LOG_LEVEL: level }, `unknown KEEL_LOG_LEVEL; using warn (known: ${[...LEVELS].join(', ')})`);
  }
  return logger;
}
