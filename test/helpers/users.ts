// Another user for the tests that need one: `nobody`, which every system has.
import { spawnSync } from 'node:child_process';
import { BIN } from './logged-proc.js';

export const nobody = { uid: 65534, gid: 65534 };

export const isRoot = process.getuid?.() === 0;

/** Why ghostfs cannot be run as `nobody` here (false if it can): the tests are not root, or that user cannot read ghostfs where it is. */
export const nobodyCannotRun: string | false = !isRoot
  ? 'running a process as another user needs root'
  : spawnSync(process.execPath, ['-e', `require('fs').accessSync(${JSON.stringify(BIN)}, require('fs').constants.R_OK)`], nobody).status !== 0 && `user ${nobody.uid} cannot read ${BIN}`;
