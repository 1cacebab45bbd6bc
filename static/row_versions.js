// @ts-check
/**
 * Per player, the highest row `version` seen in `leaderboard:update` change
 * rows (PROTOCOL 2). Events of two instances can reach the log in another
 * order than their commits: a row older than one already seen is dropped, so
 * the board never goes back to an older rating. A row of the same version
 * passes (applying it again changes nothing; the page replays recent rows
 * over an HTTP re-read).
 *
 * `leaderboard:initial` entries carry no version: a snapshot is the server's
 * word on the whole board at its position, read after every event it
 * delivered before it, so it replaces rows; only change rows are compared.
 * Versions are the database's row versions: they survive a stream reset or a
 * new event-log epoch, so they are kept across those.
 *
 * @module row_versions
 */

export class RowVersions {
  constructor() {
    /** @type {Map<string, number>} */
    this.highest = new Map();
  }

  /**
   * The rows of `changes` that are not older than what was seen, recording
   * their versions. Rows without a version (an older server) always pass.
   * @template {{player_id: string, version?: number}} T
   * @param {T[]} changes
   * @returns {T[]}
   */
  fresh(changes) {
    return changes.filter((c) => {
      if (typeof c.version !== 'number') return true;
      const seen = this.highest.get(c.player_id);
      if (seen !== undefined && c.version < seen) return false;
      this.highest.set(c.player_id, c.version);
      return true;
    });
  }
}
