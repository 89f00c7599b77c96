// External tools the benchmarks need: found on PATH, or installed the Debian way.
import { spawnSync } from 'node:child_process';
import { progress } from './session.js';

export function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

export const fusermount = (): string => (have('fusermount3') ? 'fusermount3' : 'fusermount');

/**
 * Installs the Debian packages of the commands that are missing (`need`: any
 * of these commands, else that package), plus libfuse2, which the fuse-native
 * driver loads (the native one links the libfuse3 it was built against). Uses
 * apt-get as root or through `sudo -n`.
 */
export function ensureDebianPackages(need: ReadonlyArray<readonly [readonly string[], string]>): void {
  const missing: string[] = [];
  for (const [cmds, pkg] of need) if (!cmds.some(have)) missing.push(pkg);
  if (spawnSync('sh', ['-c', "ldconfig -p 2>/dev/null | grep -q 'libfuse.so.2 '"]).status !== 0) missing.push('libfuse2');
  if (!missing.length) return;
  const root = process.getuid?.() === 0;
  // sudo resets the environment, so the non-interactive switch rides on env(1).
  const aptCmd = root ? ['apt-get'] : have('sudo') ? ['sudo', '-n', 'env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get'] : null;
  if (!aptCmd || !have('apt-get')) throw new Error(`missing Debian packages ${missing.join(', ')}; install them (apt-get install ${missing.join(' ')}) and run again`);
  progress(`installing Debian packages: ${missing.join(' ')}\n`);
  const apt = (args: string[]): void => {
    // Installer chatter goes to stderr: stdout is the report.
    const r = spawnSync(aptCmd[0]!, [...aptCmd.slice(1), ...args], { stdio: ['ignore', 2, 2], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    if (r.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed (exit ${r.status})`);
  };
  apt(['update', '-qq']);
  apt(['install', '-y', '-qq', '--no-install-recommends', ...missing]);
}
