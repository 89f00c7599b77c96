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

/**
 * For a message a burst would repeat for each file (a tar of such files):
 * logged at `level` the first time, at debug level after that.
 */
export function onceThenDebug(level: 'info' | 'warn'): (what: Record<string, unknown>, msg: string) => void {
  let told = false;
  return (what, msg) => {
    if (told) log.debug(what, msg);
    else log[level](what, `${msg} (said once, then at debug level)`);
    told = true;
  };
}

export type { Logger };
