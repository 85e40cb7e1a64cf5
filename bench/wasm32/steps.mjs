// Runs Python steps in MicroPython's WebAssembly port (32-bit, as the ESP32), one call from
// JavaScript each, and reports the heap after each: bench/firmware_heap32.py drives it.
//
//   node steps.mjs PLAN.json
//
// PLAN: {"port": path of micropython.mjs, "heap": bytes, "folders": {"/dir": host folder},
// "files": {"/path": host file}, "steps": [Python source, ...]}. The port collects garbage
// only between calls from JavaScript (it cannot see roots on the WebAssembly stack), and grows
// its heap rather than fail: a step fits in the heap if the heap's size is the same at its end.
// Python's output passes through; the last line is a JSON object: {"pool": bytes the
// collector manages at start (the heap less its tables), "steps": [{"end": bytes in use at
// the step's end, "live": after the collection that follows, "grew": whether the step needed
// more heap than there was}, ...]}.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const plan = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const { loadMicroPython } = await import(pathToFileURL(plan.port).href);
let captured = null; // lines of output kept instead of passed through, while not null
const mp = await loadMicroPython({
  heapsize: plan.heap,
  stdout: (line) => (captured ? captured.push(line) : process.stdout.write(line + "\n")),
  stderr: (line) => process.stderr.write(line + "\n"),
});
for (const [dir, host] of Object.entries(plan.folders || {})) {
  mp.FS.mkdirTree(dir);
  for (const name of fs.readdirSync(host)) {
    mp.FS.writeFile(dir + "/" + name, fs.readFileSync(path.join(host, name)));
  }
}
for (const [file, host] of Object.entries(plan.files || {})) {
  mp.FS.mkdirTree(path.posix.dirname(file));
  mp.FS.writeFile(file, fs.readFileSync(host));
}

// Every step is compiled before the first runs, and then run, measured and followed by a
// collection through calls into Python that compile nothing: the compiler's own transient
// buffers, which a board running .mpy files never allocates, stay out of the figures.
// gc.mem_free() counts the heap the port may still add (a constant): a change in
// mem_alloc() + mem_free() is a change in the heap's size.
mp.globals.set("_sources", JSON.stringify(plan.steps));
mp.runPython(`
import gc, json
_code = [compile(source, "<step>", "exec") for source in json.loads(_sources)]
_sources = None
_end = _size = 0


def _step(i):
    global _end, _size
    if i >= 0:
        exec(_code[i])
    _end = gc.mem_alloc()
    _size = gc.mem_alloc() + gc.mem_free()
`);
const step = mp.globals.get("_step");
const collect = mp.pyimport("gc").collect;
const run = (i) => {
  step(i);
  return { end: mp.globals.get("_end"), size: mp.globals.get("_size") };
};
collect();
const start = run(-1).size;
captured = [];
mp.runPython("import micropython\nmicropython.mem_info()");
const pool = Number(/GC: total: (\d+)/.exec(captured.join("\n"))[1]);
captured = null;
const report = { pool, steps: [] };
for (let i = 0; i < plan.steps.length; i++) {
  let measured;
  try {
    measured = run(i);
  } catch (error) {
    process.stderr.write(`step failed:\n${plan.steps[i]}\n${error.message}\n`);
    process.exit(1);
  }
  collect();
  report.steps.push({ end: measured.end, live: run(-1).end, grew: measured.size !== start });
}
process.stdout.write(JSON.stringify(report) + "\n");
