// The ghostfs command line: one binary that serves, mounts and administers.
import { Command } from 'commander';
import { serveCommand } from './serve.js';
import { demoCommand } from './demo.js';
import { mountCommand } from './mount.js';
import { unmountCommand } from './unmount.js';
import { syncCommand } from './sync.js';
import { statusCommand } from './status.js';
import { gcCommand, purgeCommand, warmupCommand } from './cache.js';

const program = new Command('ghostfs')
  .description('mount workspaces that live on remote mesh nodes as local directories')
  .version('0.1.0')
  .showHelpAfterError()
  .addCommand(serveCommand())
  .addCommand(mountCommand())
  .addCommand(unmountCommand())
  .addCommand(syncCommand())
  .addCommand(statusCommand())
  .addCommand(purgeCommand())
  .addCommand(gcCommand())
  .addCommand(warmupCommand())
  .addCommand(demoCommand());

await program.parseAsync(process.argv);
