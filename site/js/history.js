// Undo/redo for the editors: two stacks of actions {undo, redo} (functions, may be async).

/** onChange(): after every change of either stack (to enable or disable buttons). */
export function history(onChange) {
  const past = [];
  const future = [];
  let busy = false; // an async step is running: a second one waits its turn (is refused)

  /** Take the last action of `from`, run its `what`, keep it on `to`; false when there is none. */
  async function move(from, to, what) {
    if (busy || !from.length) return false;
    busy = true;
    const action = from.pop();
    try {
      await action[what]();
      to.push(action);
    } catch (e) {
      from.push(action); // not done: it can be tried again
      throw e;
    } finally {
      busy = false;
      onChange();
    }
    return true;
  }

  return {
    /** A change that was just made; it ends what could be redone. */
    record(action) {
      past.push(action);
      future.length = 0;
      onChange();
    },
    undo: () => move(past, future, "undo"),
    redo: () => move(future, past, "redo"),
    canUndo: () => past.length > 0,
    canRedo: () => future.length > 0,
  };
}

/** "undo" for Ctrl+Z (⌘Z), "redo" for Ctrl+Shift+Z or Ctrl+Y, else null. */
export function undoKey(event) {
  if (!(event.ctrlKey || event.metaKey) || event.altKey) return null;
  const key = event.key.toLowerCase();
  if (key === "y" || (key === "z" && event.shiftKey)) return "redo";
  return key === "z" ? "undo" : null;
}
