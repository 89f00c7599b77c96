// A check run through a mount (python, from a child process): files written
// into a new directory, then the directory looked at right away, archived
// with tar (which fails when a directory "changed as we read it"), and
// looked at again a while later. Nobody changes it after the writes, so
// what is shown of it must not change either; the writes themselves moved
// its times, as they would on a disk. Prints JSON:
// { made, before: [mtime_ns, ctime_ns] as strings (after the mkdir, after the writes),
//   tar: exit code, tarErr, after: same as before }.
export const DIR_STABLE_PY = `import os, sys, json, subprocess, time
d = sys.argv[1]
os.mkdir(d)
look = lambda: [str(os.stat(d).st_mtime_ns), str(os.stat(d).st_ctime_ns)]
made = look()
time.sleep(0.05)
for i in range(20):
    with open(os.path.join(d, 'f%d' % i), 'w') as f: f.write('file %d\\n' % i)
before = look()
tar = subprocess.run(['tar', '-cf', '/dev/null', '-C', os.path.dirname(d), os.path.basename(d)], capture_output=True, text=True)
time.sleep(float(sys.argv[2]))
print(json.dumps({'made': made, 'before': before, 'tar': tar.returncode, 'tarErr': tar.stderr.strip(), 'after': look()}))`;

export interface DirStable {
  made: [string, string];
  before: [string, string];
  tar: number;
  tarErr: string;
  after: [string, string];
}
