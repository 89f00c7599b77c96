// A map whose values are sets: an entry exists while its set has members.

export class SetMap<K, V> extends Map<K, Set<V>> {
  /** Adds `v` to `k`'s set, making the set if it is the first. */
  add(k: K, v: V): void {
    let set = this.get(k);
    if (!set) this.set(k, (set = new Set()));
    set.add(v);
  }

  /** Removes `v` from `k`'s set, and the set once empty; false if `v` was not there. */
  remove(k: K, v: V): boolean {
    const set = this.get(k);
    if (!set?.delete(v)) return false;
    if (set.size === 0) this.delete(k);
    return true;
  }
}
