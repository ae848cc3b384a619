/** A small typed event emitter, so the client needs no framework and no Node built-ins. */
export class Emitter<Events extends { [name: string]: unknown }> {
  private listeners: { [K in keyof Events]?: Array<(value: Events[K]) => void> } = {};

  /** Calls `listener` on every `name` event; returns a function that removes it. */
  on<K extends keyof Events>(name: K, listener: (value: Events[K]) => void): () => void {
    const list = (this.listeners[name] ??= []);
    list.push(listener);
    return () => this.off(name, listener);
  }

  /** Removes a listener added with `on`. */
  off<K extends keyof Events>(name: K, listener: (value: Events[K]) => void): void {
    const list = this.listeners[name];
    if (list) this.listeners[name] = list.filter((l) => l !== listener);
  }

  /** Delivers `value` to every listener of `name`; a throwing listener does not stop the others. */
  protected emit<K extends keyof Events>(name: K, value: Events[K]): void {
    for (const listener of this.listeners[name] ?? []) {
      try {
        listener(value);
      } catch (error) {
        console.error(`paytrack client: a ${String(name)} listener threw`, error);
      }
    }
  }
}
