// Builds the console into dist/, which `quarry serve` embeds. Names carry no content hash:
// the server sends them with no-cache, and a rebuild of unchanged sources must give the
// same files (CI compares them with the committed bundle).
import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

export default defineConfig({
  plugins: [svelte()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    rollupOptions: {
      output: {
        entryFileNames: 'assets/console.js',
        chunkFileNames: 'assets/[name].js',
        assetFileNames: 'assets/[name][extname]',
      },
    },
  },
  server: {
    // `npm run dev` serves the sources and sends API calls to a local `quarry serve`.
    proxy: Object.fromEntries(
      ['/login', '/connections', '/query', '/events', '/source-types', '/health'].map((p) => [
        p,
        process.env.QUARRY_HTTP ?? 'http://127.0.0.1:8080',
      ]),
    ),
  },
});
