// Server-sent events read from a fetch stream (EventSource cannot send the bearer header): the
// parts of the format the service writes and any other server may (`id:`, `event:`, `data:` over
// several lines, comments, CR, LF or CRLF line ends split anywhere between chunks).

export class SseParser {
  constructor() {
    this.buffer = "";
    this.lastId = null;
    this.data = [];
    this.event = "";
  }

  /** Takes a chunk of text; returns the events it completed: `{id, event, data}`. */
  push(chunk) {
    this.buffer += chunk;
    const out = [];
    for (;;) {
      const at = this.buffer.search(/[\r\n]/);
      if (at < 0) break;
      // A CR at the very end may be the first half of a CRLF: wait for the next chunk.
      if (this.buffer[at] === "\r" && at === this.buffer.length - 1) break;
      const skip = this.buffer[at] === "\r" && this.buffer[at + 1] === "\n" ? 2 : 1;
      const line = this.buffer.slice(0, at);
      this.buffer = this.buffer.slice(at + skip);
      const event = this.line(line);
      if (event) out.push(event);
    }
    return out;
  }

  line(line) {
    if (line === "") {
      if (this.data.length === 0) { this.event = ""; return null; }
      const event = { id: this.lastId, event: this.event || "message", data: this.data.join("\n") };
      this.data = [];
      this.event = "";
      return event;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
    return null;
  }
}
