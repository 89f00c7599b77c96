// The one logger. JSON lines to stderr (stdout belongs to CLI output for
// people); pretty-printed only when stderr is a terminal, or forced with
// GHOSTFS_LOG_PRETTY=1. Level from GHOSTFS_LOG_LEVEL (default "info").
import { pino, type Logger } from 'pino';

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function makeLogger(): Logger {
  const level = process.env.GHOSTFS_LOG_LEVEL ?? 'info';
  if (!LEVELS.includes(level)) {
    throw new Error(`GHOSTFS_LOG_LEVEL must be one of ${LEVELS.join(', ')}, not "${level}"`);
  }
  const file = process.env.GHOSTFS_LOG_FILE;
  const pretty =
    !file && (process.env.GHOSTFS_LOG_PRETTY === '1' || (process.env.GHOSTFS_LOG_PRETTY !== '0' && process.stderr.isTTY));
  if (pretty) {
    return pino({
      level,
      transport: { target: 'pino-pretty', options: { destination: 2, translateTime: 'SYS:HH:MM:ss.l' } },
    });
  }
  const dest = file ? pino.destination({ dest: file, mkdir: true, sync: false }) : pino.destination({ fd: 2, sync: true });
  return pino({ level, base: { pid: process.pid } }, dest);
}

export const log: Logger = makeLogger();

export type { Logger };
