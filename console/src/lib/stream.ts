// A streamed response body as the complete pieces between separators, in order, so that a
// piece split across network chunks is handed over whole. Each read's pieces come as one
// array, so that a consumer can update the page once per read rather than once per piece.

export async function* pieces(response: Response, separator: string): AsyncGenerator<string[]> {
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += value;
      const parts = buffered.split(separator);
      buffered = parts.pop() ?? '';
      if (parts.length) yield parts;
    }
  } finally {
    // Leaving early (a row cap, say) stops the body, and with it the server's work.
    await reader.cancel().catch(() => {});
  }
}
