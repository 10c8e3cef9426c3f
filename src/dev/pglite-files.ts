/**
 * @module dev/pglite-files
 * PGlite's WebAssembly and file-system bundle, imported `with { type: "file" }` so that
 * `bun build --compile` embeds them: PGlite would otherwise read them next to its own module,
 * which a compiled executable does not have.
 * NOTE: relative paths into node_modules, because the package's `exports` do not list these files.
 */
import pgliteWasmPath from "../../node_modules/@electric-sql/pglite/dist/pglite.wasm" with { type: "file" };
import initdbWasmPath from "../../node_modules/@electric-sql/pglite/dist/initdb.wasm" with { type: "file" };
import fsBundlePath from "../../node_modules/@electric-sql/pglite/dist/pglite.data" with { type: "file" };

/** Options for `PGlite.create` that make it load nothing by itself. */
export async function pgliteFiles(): Promise<{ pgliteWasmModule: WebAssembly.Module; initdbWasmModule: WebAssembly.Module; fsBundle: Blob }> {
  const [pgliteWasmModule, initdbWasmModule] = await Promise.all(
    [pgliteWasmPath, initdbWasmPath].map(async (p) => WebAssembly.compile(await Bun.file(p).arrayBuffer())),
  );
  return { pgliteWasmModule: pgliteWasmModule!, initdbWasmModule: initdbWasmModule!, fsBundle: Bun.file(fsBundlePath) };
}
