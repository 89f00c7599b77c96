// A wait with a ceiling: for work worth waiting a moment for, not worth
// keeping a caller past its deadline for.

/** Settles when `p` settles (fulfilled or rejected alike) or after `ms`, whichever comes first. */
export function waitAtMost(p: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p.catch(() => undefined), new Promise((r) => (timer = setTimeout(r, ms)))]).finally(() => clearTimeout(timer));
}
