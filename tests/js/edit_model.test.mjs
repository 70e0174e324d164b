// Tests of ui/js/edit_model.js with node's built-in runner (tests/test_edit_model_js.py runs them).

import assert from "node:assert/strict";
import test from "node:test";

import { EditModel, cropFromRuns, decodeRuns, encodeRuns } from "../../ui/js/edit_model.js";

/** A full-image crop from rows of "0/1" strings. */
function maskFrom(rows, x0 = 0, y0 = 0) {
  const height = rows.length;
  const width = rows[0].length;
  const data = new Uint8Array(width * height);
  rows.forEach((row, y) => [...row].forEach((c, x) => { data[y * width + x] = c === "1" ? 1 : 0; }));
  return { x0, y0, width, height, data };
}

/** The ID map as rows of digits (IDs < 10). */
function rows(model) {
  const out = [];
  for (let y = 0; y < model.height; y++) out.push([...model.labels.slice(y * model.width, (y + 1) * model.width)].join(""));
  return out;
}

function modelFrom(rowsText) {
  const height = rowsText.length;
  const width = rowsText[0].length;
  const labels = new Uint8Array(width * height);
  rowsText.forEach((row, y) => [...row].forEach((c, x) => { labels[y * width + x] = Number(c); }));
  return new EditModel({ width, height, labels });
}

test("runs round-trip and reject a wrong length", () => {
  const labels = new Uint8Array([0, 0, 3, 3, 3, 0, 255, 1]);
  const runs = encodeRuns(labels);
  assert.deepEqual(runs, [0, 2, 3, 3, 0, 1, 255, 1, 1, 1]);
  assert.deepEqual(decodeRuns(runs, 8), labels);
  assert.throws(() => decodeRuns(runs, 9), /cover 8 pixels, the image has 9/);
  assert.throws(() => decodeRuns([256, 8], 8), /Bad mask runs/);
  assert.deepEqual(cropFromRuns({ x0: 1, y0: 2, width: 2, height: 1, runs: [0, 1, 1, 1] }).data, new Uint8Array([0, 1]));
});

test("an empty frame starts object 1; a saved frame starts the first free ID", () => {
  const empty = new EditModel({ width: 3, height: 2 });
  assert.equal(empty.currentId, 1);
  assert.equal(empty.selected, null);
  assert.equal(empty.dirty, false);
  const saved = modelFrom(["110", "002"]);
  assert.equal(saved.currentId, 3);
  assert.deepEqual(saved.objects(), [{ id: 1, area: 2, bbox: [0, 0, 2, 1] }, { id: 2, area: 1, bbox: [2, 1, 3, 2] }]);
});

test("refine with nothing selected starts a new object and leaves object 1 alone", () => {
  const m = modelFrom(["1100", "1100", "0000"]);
  m.setCurrentId(2);
  assert.equal(m.selected, null, "ID 2 does not exist yet: nothing selected");
  m.addMask(maskFrom(["0011", "0011"]));
  assert.deepEqual(rows(m), ["1122", "1122", "0000"]);
  assert.equal(m.selected, 2);
  // Adding again grows the selected object 2, never object 1.
  m.addMask(maskFrom(["0001"], 0, 2));
  assert.deepEqual(rows(m), ["1122", "1122", "0002"]);
});

test("add never takes another object's pixels; remove only touches the selected object", () => {
  const m = modelFrom(["1100", "0000"]);
  m.setCurrentId(2);
  m.addMask(maskFrom(["1111", "1111"]));
  assert.deepEqual(rows(m), ["1122", "2222"]);
  m.removeMask(maskFrom(["1111", "1000"]));
  assert.deepEqual(rows(m), ["1100", "0222"]);
  m.select(null);
  assert.equal(m.removeMask(maskFrom(["1111", "1111"])), false, "no selection: remove is a no-op");
  assert.deepEqual(rows(m), ["1100", "0222"]);
});

test("the selected object is refined, whatever the current ID was before", () => {
  const m = modelFrom(["1000", "0020"]);
  m.select(1);
  assert.equal(m.currentId, 1);
  m.addMask(maskFrom(["11"], 1, 0));
  assert.deepEqual(rows(m), ["1110", "0020"]);
});

test("crops outside the image are clipped", () => {
  const m = new EditModel({ width: 3, height: 2 });
  m.addMask(maskFrom(["111", "111"], 2, 1));
  assert.deepEqual(rows(m), ["000", "001"]);
  m.addMask(maskFrom(["11"], -1, 0));
  assert.deepEqual(rows(m), ["100", "001"]);
  assert.throws(() => m.addMask({ x0: 0, y0: 0, width: 2, height: 2, data: new Uint8Array(3) }), /needs 4 values/);
});

test("renumber moves every pixel, merging into an existing ID", () => {
  const m = modelFrom(["1102", "1100"]);
  assert.equal(m.renumber(1, 3), true);
  assert.deepEqual(rows(m), ["3302", "3300"]);
  assert.equal(m.selected, 3);
  m.renumber(2, 3);
  assert.deepEqual(rows(m), ["3303", "3300"]);
  assert.equal(m.renumber(7, 1), false, "a missing object is not renumbered");
  assert.throws(() => m.renumber(3, 0), /1 to 255/);
  assert.throws(() => m.renumber(3, 256), /1 to 255/);
});

test("delete clears an object and its selection", () => {
  const m = modelFrom(["1122"]);
  m.select(2);
  m.deleteObject(2);
  assert.deepEqual(rows(m), ["1100"]);
  assert.equal(m.selected, null);
  assert.equal(m.deleteObject(2), false);
});

test("brush paints a disc of the given size over anything; one stroke is one undo step", () => {
  const m = new EditModel({ width: 7, height: 7 });
  m.paint(3.5, 3.5, { radius: 1 });
  // Pixels whose centre lies within the radius.
  assert.deepEqual(rows(m), ["0000000", "0000000", "0001000", "0011100", "0001000", "0000000", "0000000"]);
  m.undo();
  assert.equal(m.dirty, false);
  m.paint(3.5, 3.5, { radius: 1.5 });
  assert.deepEqual(rows(m), ["0000000", "0000000", "0011100", "0011100", "0011100", "0000000", "0000000"]);
  // A stroke along row 0 with object 2 painted over object 1.
  m.setCurrentId(2);
  m.beginStroke({ radius: 0.6 });
  m.strokeTo(0.5, 3.5);
  m.strokeTo(6.5, 3.5);
  m.endStroke();
  assert.deepEqual(rows(m)[3], "2222222");
  assert.deepEqual(rows(m)[2], "0011100");
  assert.equal(m.selected, 2);
  m.undo();
  assert.deepEqual(rows(m)[3], "0011100", "the whole stroke is undone at once");
});

test("the eraser clears the selected object only, or everything when none is selected", () => {
  const m = modelFrom(["1122", "1122"]);
  m.select(2);
  m.beginStroke({ erase: true, radius: 0.6 });
  for (let x = 0; x < 4; x++) m.strokeTo(x + 0.5, 0.5);
  m.endStroke();
  assert.deepEqual(rows(m), ["1100", "1122"]);
  m.select(null);
  m.paint(0.5, 1.5, { erase: true, radius: 0.6 });
  assert.deepEqual(rows(m), ["1100", "0122"]);
  m.select(2);
  m.beginStroke({ erase: true, radius: 10 });
  m.strokeTo(2, 1);
  m.endStroke();
  assert.deepEqual(rows(m), ["1100", "0100"]);
  assert.equal(m.selected, null, "the erased object is gone: nothing is selected");
});

test("undo and redo go through every kind of edit and restore selection", () => {
  const m = modelFrom(["1000", "0000"]);
  const states = [rows(m)];
  m.setCurrentId(2);
  m.addMask(maskFrom(["01"]));
  states.push(rows(m));
  m.renumber(2, 3);
  states.push(rows(m));
  m.paint(3.5, 1.5, { radius: 0.6 });
  states.push(rows(m));
  m.deleteObject(1);
  states.push(rows(m));
  m.removeMask(maskFrom(["0001"], 0, 1));
  states.push(rows(m));
  assert.deepEqual(states, [["1000", "0000"], ["1200", "0000"], ["1300", "0000"], ["1300", "0003"], ["0300", "0003"], ["0300", "0000"]]);
  for (let k = states.length - 2; k >= 0; k--) {
    assert.equal(m.undo(), true);
    assert.deepEqual(rows(m), states[k]);
  }
  assert.equal(m.undo(), false);
  assert.equal(m.dirty, false);
  for (let k = 1; k < states.length; k++) {
    assert.equal(m.redo(), true);
    assert.deepEqual(rows(m), states[k]);
  }
  assert.equal(m.redo(), false);
  // A new edit drops the redo branch.
  m.undo();
  m.addMask(maskFrom(["1"], 0, 1));
  assert.equal(m.canRedo, false);
});

test("dirty follows the content, and discard restores the saved state exactly", () => {
  const m = modelFrom(["1100", "0000"]);
  const saved = m.runs().slice();
  assert.equal(m.dirty, false);
  m.select(1);
  assert.equal(m.dirty, false, "selection is not an edit");
  m.addMask(maskFrom(["1111", "1111"]));
  assert.equal(m.dirty, true);
  m.undo();
  assert.equal(m.dirty, false, "undoing back to the saved state is not unsaved");
  m.redo();
  m.setCurrentId(2);
  m.paint(0.5, 1.5, { radius: 0.6 });
  assert.equal(m.discard(), true);
  assert.deepEqual(m.runs(), saved);
  assert.deepEqual(rows(m), ["1100", "0000"]);
  assert.equal(m.dirty, false);
  assert.equal(m.selected, null);
  assert.equal(m.currentId, 2, "after Discard the next edit starts a new object");
  assert.equal(m.discard(), false, "nothing to discard");
  m.undo();
  assert.equal(m.dirty, true, "Discard itself can be undone");
});

test("markSaved makes the current state the one Discard returns to", () => {
  const m = new EditModel({ width: 2, height: 1 });
  m.addMask(maskFrom(["10"]));
  m.markSaved();
  assert.equal(m.dirty, false);
  m.addMask(maskFrom(["01"]));
  m.discard();
  assert.deepEqual(rows(m), ["10"]);
});

test("newObject selects none and picks the first free ID", () => {
  const m = modelFrom(["1203"]);
  m.select(2);
  m.newObject();
  assert.equal(m.selected, null);
  assert.equal(m.currentId, 4);
  m.deleteObject(2);
  m.newObject();
  assert.equal(m.currentId, 2);
  assert.equal(m.idAt(3.9, 0.2), 3);
  assert.equal(m.idAt(-1, 0), 0);
});

test("labels given as runs, a Uint8Array or nothing", () => {
  const a = new EditModel({ width: 2, height: 2, labels: [0, 1, 5, 3] });
  assert.deepEqual(rows(a), ["05", "55"]);
  assert.throws(() => new EditModel({ width: 2, height: 2, labels: new Uint8Array(3) }), /3 pixels, the image 4/);
  assert.throws(() => new EditModel({ width: 0, height: 2 }), /Bad image size/);
});
