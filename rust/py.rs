//! The Python edge: argument extraction, the one error mapping, GIL release.
//! Everything below calls the plain-Rust core.
//!
//! Rules: extract arguments while holding the GIL, then run heavy work with
//! the GIL released ([`detached`]) and panics caught ([`without_gil`]), so
//! neither a long seal nor a bug can stall or crash the interpreter, nor a
//! seal still running when the interpreter exits.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use numpy::{PyArray1, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyFileExistsError, PyFileNotFoundError, PyOSError, PyOverflowError,
    PyPermissionError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::checksum::crc32c_append;
use crate::error::Error;
use crate::index::{Batch, IndexFile, NewEntry, Summary};
use crate::keyhash::fingerprint;
use crate::sealed::{Footer, SealedIndex};
use crate::Entry;

create_exception!(
    tieredindex,
    TieredIndexError,
    PyException,
    "Base of every error tieredindex raises on purpose."
);
create_exception!(
    tieredindex,
    CorruptFileError,
    TieredIndexError,
    "A file or object failed a structural or checksum check."
);
create_exception!(
    tieredindex,
    StoreClosedError,
    TieredIndexError,
    "A write after shutdown() began."
);
create_exception!(
    tieredindex,
    StoreLockedError,
    TieredIndexError,
    "Another live store or writer holds this directory or file."
);
create_exception!(
    tieredindex,
    RemoteError,
    TieredIndexError,
    "The remote store failed for good."
);

/// Buffers above this size are hashed with the GIL released.
const GIL_RELEASE_BYTES: usize = 64 * 1024;

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let message = err.to_string();
        match err {
            Error::Io { path, source } => {
                let args = (
                    source.raw_os_error().unwrap_or(0),
                    source.to_string(),
                    path.display().to_string(),
                );
                match source.kind() {
                    std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(args),
                    std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(args),
                    std::io::ErrorKind::AlreadyExists => PyFileExistsError::new_err(args),
                    _ => PyOSError::new_err(args),
                }
            }
            Error::Corrupt { .. } => CorruptFileError::new_err(message),
            Error::Locked { .. } => StoreLockedError::new_err(message),
            Error::InvalidArgument { .. } | Error::Closed { .. } => PyValueError::new_err(message),
            Error::Forked { .. } => TieredIndexError::new_err(message),
        }
    }
}

/// Runs `f` with the GIL released, turning a panic into `TieredIndexError`.
fn without_gil<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> crate::Result<T> + Send,
) -> PyResult<T> {
    let outcome = detached(py, || catch_unwind(AssertUnwindSafe(f)));
    match outcome {
        Ok(result) => result.map_err(PyErr::from),
        Err(panic) => Err(panic_error(&panic)),
    }
}

/// `py.detach(f)` for an `f` that runs core code only (PyO3 is not told the
/// thread let go of the GIL, so `f` must not touch Python objects), except
/// for how the thread comes back.
///
/// Why: CPython before 3.14 ends a thread that takes the GIL back while the
/// interpreter finalizes (a daemon thread whose seal outlived the program)
/// with `pthread_exit`, and its forced unwind through these frames and
/// PyO3's `catch_unwind` aborts the process (cpython#87135, pyo3#6084). Such
/// a thread parks for ever instead, as CPython 3.14 does: it checks before
/// it asks for the GIL and, should finalization start while it waits, the
/// unwind runs a guard that parks it (what pyo3-ffi does in
/// `PyGILState_Ensure`).
fn detached<T>(_py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    // Finalizing already while this thread holds the GIL: it is the thread
    // that finalizes (a finalizer calling us), which takes the GIL back.
    let finalizer = interpreter_finalizing();
    // SAFETY: `_py` proves this thread holds the GIL, whose thread state
    // PyEval_SaveThread hands back; `reattach` restores it exactly once,
    // also after a panic of `f`.
    let tstate = unsafe { pyo3::ffi::PyEval_SaveThread() };
    let outcome = catch_unwind(AssertUnwindSafe(f));
    reattach(tstate, finalizer);
    outcome.unwrap_or_else(|panic| resume_unwind(panic))
}

fn reattach(tstate: *mut pyo3::ffi::PyThreadState, finalizer: bool) {
    // "C-unwind": a pthread_exit in it unwinds into this frame, which then
    // drops the guard below (pyo3-ffi declares it "C": no cleanup here).
    extern "C-unwind" {
        fn PyEval_RestoreThread(tstate: *mut pyo3::ffi::PyThreadState);
    }
    if !finalizer && interpreter_finalizing() {
        park_for_ever();
    }
    let guard = ParkOnUnwind;
    // SAFETY: `tstate` is this thread's state, saved by `detached` and not
    // restored since.
    unsafe { PyEval_RestoreThread(tstate) };
    std::mem::forget(guard);
}

/// Dropped only by an unwind out of `PyEval_RestoreThread`.
struct ParkOnUnwind;

impl Drop for ParkOnUnwind {
    fn drop(&mut self) {
        park_for_ever();
    }
}

fn park_for_ever() -> ! {
    loop {
        std::thread::park();
    }
}

/// Whether the interpreter is finalizing; callable without the GIL.
/// `Py_IsFinalizing` (3.13+) or `_Py_IsFinalizing` (3.11, 3.12), looked up
/// at run time: naming the one this Python lacks would fail the import.
fn interpreter_finalizing() -> bool {
    type IsFinalizing = unsafe extern "C" fn() -> std::ffi::c_int;
    static IS_FINALIZING: std::sync::OnceLock<Option<IsFinalizing>> = std::sync::OnceLock::new();
    let found = IS_FINALIZING.get_or_init(|| {
        [c"Py_IsFinalizing", c"_Py_IsFinalizing"]
            .into_iter()
            .find_map(|name| {
                // SAFETY: dlsym reads a NUL-terminated name and returns an
                // address or null.
                let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
                // SAFETY: both are `int (void)` functions of the C API.
                (!sym.is_null())
                    .then(|| unsafe { std::mem::transmute::<*mut libc::c_void, IsFinalizing>(sym) })
            })
    });
    // SAFETY: either function only reads the runtime's finalizing flag.
    found.is_some_and(|is_finalizing| unsafe { is_finalizing() } != 0)
}

/// Runs `f` holding the GIL (short calls), still catching panics.
fn guarded<T>(f: impl FnOnce() -> crate::Result<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(PyErr::from),
        Err(panic) => Err(panic_error(&panic)),
    }
}

fn panic_error(panic: &Box<dyn std::any::Any + Send>) -> PyErr {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    TieredIndexError::new_err(format!("internal error (please report): {what}"))
}

/// A contiguous buffer borrowed through the buffer protocol, whatever its
/// item format (bytes, bytearray, memoryview, numpy arrays of any dtype).
struct RawBuffer {
    view: pyo3::ffi::Py_buffer,
}

impl RawBuffer {
    fn get(obj: &Bound<'_, PyAny>, arg: &str) -> PyResult<Self> {
        // SAFETY: PyObject_CheckBuffer only inspects the type of a live object.
        if unsafe { pyo3::ffi::PyObject_CheckBuffer(obj.as_ptr()) } == 0 {
            let type_name = type_name_of(obj);
            return Err(PyTypeError::new_err(format!(
                "{arg} must be a bytes-like object, not {type_name}"
            )));
        }
        let mut view = std::mem::MaybeUninit::<pyo3::ffi::Py_buffer>::uninit();
        // SAFETY: `view` is writable storage for a Py_buffer; on success it is
        // initialised and released in Drop, which keeps the exporter alive.
        let rc = unsafe {
            pyo3::ffi::PyObject_GetBuffer(
                obj.as_ptr(),
                view.as_mut_ptr(),
                pyo3::ffi::PyBUF_ANY_CONTIGUOUS,
            )
        };
        if rc != 0 {
            let cause = PyErr::take(obj.py());
            let detail = cause.map(|e| e.to_string()).unwrap_or_default();
            return Err(PyValueError::new_err(format!(
                "{arg} must be a contiguous buffer ({detail})"
            )));
        }
        // SAFETY: initialised by the successful PyObject_GetBuffer above.
        Ok(Self {
            view: unsafe { view.assume_init() },
        })
    }

    fn as_slice(&self) -> &[u8] {
        let len = usize::try_from(self.view.len).unwrap_or(0);
        if len == 0 || self.view.buf.is_null() {
            return &[];
        }
        // SAFETY: the exporter guarantees `len` contiguous readable bytes at
        // `buf` while the view is held (released only in Drop).
        unsafe { std::slice::from_raw_parts(self.view.buf.cast::<u8>(), len) }
    }
}

// SAFETY: the view is only read, and the exporter is kept alive by it; the
// buffer protocol allows reading a held view from any thread.
unsafe impl Send for RawBuffer {}
unsafe impl Sync for RawBuffer {}

impl Drop for RawBuffer {
    fn drop(&mut self) {
        Python::attach(|_py| {
            // SAFETY: releases the view obtained in `get`, exactly once, with the GIL held.
            unsafe { pyo3::ffi::PyBuffer_Release(&mut self.view) };
        });
    }
}

/// CRC-32C (Castagnoli) of any contiguous buffer, continuing `value`.
#[pyfunction]
// API.md's signature: `value=0` (an omitted value is 0; None is taken as 0 too).
#[pyo3(signature = (data, value = None), text_signature = "(data, value=0)")]
fn crc32c(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<u32> {
    if data.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "data must be a bytes-like object, not str (encode it first)",
        ));
    }
    if value.is_some_and(|v| v.is_instance_of::<pyo3::types::PyBool>()) {
        return Err(PyTypeError::new_err("value must be an int, not bool"));
    }
    let value: u32 = match value {
        None => Some(0),
        Some(v) => v.extract::<u64>().ok().and_then(|v| u32::try_from(v).ok()),
    }
    .ok_or_else(|| {
        PyValueError::new_err("value must be a CRC-32C value, an int from 0 to 2**32-1")
    })?;
    let buffer = RawBuffer::get(data, "data")?;
    if buffer.as_slice().len() >= GIL_RELEASE_BYTES {
        without_gil(py, || Ok(crc32c_append(value, buffer.as_slice())))
    } else {
        Ok(crc32c_append(value, buffer.as_slice()))
    }
}

/// The name of `obj`'s type, for an error message.
fn type_name_of(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// An int argument as i128 (`None` past i128's range): a Python int, or
/// anything with `__index__` (numpy integers), but not a float or str.
fn index_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<i128>> {
    // A bool is an int to Python, but True as an offset or a time is a
    // caller's mistake, not a value.
    if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an int, not bool"
        )));
    }
    let int = if obj.is_instance_of::<pyo3::types::PyInt>() {
        obj.clone()
    } else {
        match obj.call_method0("__index__") {
            Ok(v) if v.is_instance_of::<pyo3::types::PyInt>() => v,
            _ => {
                let type_name = type_name_of(obj);
                return Err(PyTypeError::new_err(format!(
                    "{name} must be an int, not {type_name}"
                )));
            }
        }
    };
    Ok(int.extract::<i128>().ok())
}

/// An integer argument in `0..=max`, with errors that name the argument.
fn int_arg<T: TryFrom<u64>>(obj: &Bound<'_, PyAny>, name: &str, max: u64) -> PyResult<T> {
    let value = index_arg(obj, name)?;
    let out_of_range =
        || PyValueError::new_err(format!("{name} must be from 0 to {max}, got {obj}"));
    let value = value.ok_or_else(out_of_range)?;
    u64::try_from(value)
        .ok()
        .filter(|v| *v <= max)
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(out_of_range)
}

/// A signed integer argument (RocketMQ's Java ints and longs), no bool.
fn signed_arg<T: TryFrom<i128>>(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<T> {
    index_arg(obj, name)?
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| PyOverflowError::new_err(format!("{name} is out of range, got {obj}")))
}

const U32_MAX: u64 = u32::MAX as u64;
const I64_MAX: u64 = i64::MAX as u64;

/// The fingerprint of a `str` (as UTF-8) or `bytes` key.
fn key_fingerprint(key: &Bound<'_, PyAny>) -> PyResult<u64> {
    if let Ok(s) = key.cast::<PyString>() {
        // Hashed as UTF-8, which cannot hold a lone surrogate.
        let text = s.to_str().map_err(|e| {
            PyValueError::new_err(format!("key is not valid text: {}", e.value(key.py())))
        })?;
        return Ok(fingerprint(text.as_bytes()));
    }
    if let Ok(b) = key.cast::<PyBytes>() {
        return Ok(fingerprint(b.as_bytes()));
    }
    let type_name = type_name_of(key);
    Err(PyTypeError::new_err(format!(
        "key must be str or bytes, not {type_name}"
    )))
}

/// How many keys ahead `list_fingerprints` prefetches.
const KEY_PREFETCH_AHEAD: usize = 8;

/// Fingerprints of the keys of a list. Millions of distinct key objects
/// miss the cache one by one, so each key object is prefetched a few keys
/// ahead; items are borrowed, not increfed (which would itself touch them).
fn list_fingerprints(
    list: &Bound<'_, PyList>,
    with_index: &dyn Fn(usize, PyResult<u64>) -> PyResult<u64>,
) -> PyResult<Vec<u64>> {
    let py = list.py();
    let n = list.len();
    let item = |i: usize| -> *mut pyo3::ffi::PyObject {
        // SAFETY: i < n = the list's length, and the list cannot change while
        // this thread holds the GIL, which it does throughout.
        unsafe { pyo3::ffi::PyList_GET_ITEM(list.as_ptr(), i as pyo3::ffi::Py_ssize_t) }
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i + KEY_PREFETCH_AHEAD < n {
            let ahead = item(i + KEY_PREFETCH_AHEAD).cast::<u8>().cast_const();
            crate::mapping::prefetch_ptr(ahead);
            crate::mapping::prefetch_ptr(ahead.wrapping_add(64));
        }
        // SAFETY: a valid, non-null item of the list, alive as long as the
        // list is (see above); borrowed for this iteration only.
        let key = unsafe { pyo3::Borrowed::from_ptr(py, item(i)) };
        out.push(with_index(i, key_fingerprint(&key))?);
    }
    Ok(out)
}

/// Fingerprints of a sequence of keys.
fn key_fingerprints(keys: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    if keys.is_instance_of::<PyString>() || keys.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(
            "keys must be a sequence of str or bytes, not a single key",
        ));
    }
    let py = keys.py();
    let with_index = |i: usize, r: PyResult<u64>| {
        r.map_err(|e| {
            let message = format!("keys[{i}]: {}", e.value(py));
            if e.is_instance_of::<PyValueError>(py) {
                PyValueError::new_err(message) // a str that is not valid text
            } else {
                PyTypeError::new_err(message)
            }
        })
    };
    if let Ok(list) = keys.cast::<PyList>() {
        return list_fingerprints(list, &with_index);
    }
    if let Ok(tuple) = keys.cast::<PyTuple>() {
        return tuple
            .iter()
            .enumerate()
            .map(|(i, k)| with_index(i, key_fingerprint(&k)))
            .collect();
    }
    let iter = keys
        .try_iter()
        .map_err(|_| PyTypeError::new_err("keys must be a sequence of str or bytes"))?;
    iter.enumerate()
        .map(|(i, k)| with_index(i, k.and_then(|k| key_fingerprint(&k))))
        .collect()
}

/// A numeric column, borrowed from numpy when it already has the width the
/// file stores, otherwise converted (with range checks).
enum Column<'py, U: numpy::Element, S: numpy::Element> {
    /// The stored width and signedness, read in place.
    Unsigned(numpy::PyReadonlyArray1<'py, U>),
    /// The signed twin of the stored width (numpy's default int64, int32),
    /// checked for negatives and read in place.
    Signed(numpy::PyReadonlyArray1<'py, S>),
    /// Any other integer width, converted with range checks.
    Owned(Vec<U>),
}

impl<U: numpy::Element + bytemuck::Pod, S: numpy::Element + bytemuck::Pod> Column<'_, U, S> {
    fn as_slice(&self) -> &[U] {
        match self {
            // Contiguity was checked when the column was built.
            Column::Unsigned(a) => a.as_slice().unwrap_or(&[]),
            Column::Signed(a) => bytemuck::cast_slice(a.as_slice().unwrap_or(&[])),
            Column::Owned(v) => v,
        }
    }
}

/// Any integer sequence or array as a contiguous 1-D numpy array.
fn as_int_array<'py>(
    py: Python<'py>,
    name: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let np = py.import("numpy")?;
    let arr = if obj.is_instance_of::<PyUntypedArray>() {
        obj.clone()
    } else {
        let arr = np.call_method1("asarray", (obj,))?;
        if arr.len()? == 0 {
            // numpy makes an empty sequence float64: an empty int column
            np.call_method1("zeros", (0, "int64"))?
        } else {
            arr
        }
    };
    let arr = np.call_method1("ascontiguousarray", (arr,))?;
    let arr = arr
        .cast_into::<PyUntypedArray>()
        .map_err(|_| PyTypeError::new_err(format!("{name} must be an array of integers")))?;
    if arr.ndim() != 1 {
        return Err(PyValueError::new_err(format!(
            "{name} must be one-dimensional, got {} dimensions",
            arr.ndim()
        )));
    }
    let kind = arr.dtype().kind();
    if kind != b'i' && kind != b'u' {
        if !obj.is_instance_of::<PyUntypedArray>() {
            // A list of Python ints that fit no 64-bit type (numpy made
            // objects or floats of them): name the value, as put() would.
            out_of_range_int(name, obj)?;
        }
        return Err(PyTypeError::new_err(format!(
            "{name} must hold integers, not dtype {}",
            arr.dtype()
        )));
    }
    Ok(arr)
}

/// Raises for the first Python int of `seq` that is out of every column's
/// range: negative (ValueError) or past 64 bits (OverflowError). Ok when
/// there is none (the caller then reports the dtype).
fn out_of_range_int(name: &str, seq: &Bound<'_, PyAny>) -> PyResult<()> {
    let mut negative: Option<(usize, Bound<'_, PyAny>)> = None;
    for (i, item) in seq.try_iter()?.enumerate() {
        let item = item?;
        if !item.is_instance_of::<pyo3::types::PyInt>() {
            return Ok(());
        }
        if item.extract::<u64>().is_ok() {
            continue;
        }
        if item.extract::<i64>().is_err() {
            return Err(PyOverflowError::new_err(format!(
                "{name}[{i}] = {item} does not fit in 64 bits"
            )));
        }
        negative.get_or_insert((i, item));
    }
    match negative {
        Some((i, v)) => Err(PyValueError::new_err(format!(
            "{name}[{i}] = {v} is negative"
        ))),
        None => Ok(()),
    }
}

fn negative_error(name: &str, i: usize, v: i64) -> PyErr {
    PyValueError::new_err(format!("{name}[{i}] = {v} is negative"))
}

/// A column of 64-bit values (offsets, timestamps). int64 and uint64 arrays
/// are read in place.
fn column_u64<'py>(
    py: Python<'py>,
    name: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Column<'py, u64, i64>> {
    let arr = as_int_array(py, name, obj)?;
    if let Ok(a) = arr.cast::<PyArray1<u64>>() {
        return Ok(Column::Unsigned(a.readonly()));
    }
    let signed = if let Ok(a) = arr.cast::<PyArray1<i64>>() {
        a.clone()
    } else {
        arr.call_method1("astype", ("int64",))?
            .cast_into::<PyArray1<i64>>()?
    };
    let ro = signed.readonly();
    let values = ro.as_slice()?;
    if let Some(i) = values.iter().position(|&v| v < 0) {
        return Err(negative_error(name, i, values[i]));
    }
    Ok(Column::Signed(ro))
}

/// A column of 32-bit values (queue ids, sizes). uint32 and int32 arrays are read in
/// place; everything else is range-checked into a new vector.
fn column_u32<'py>(
    py: Python<'py>,
    name: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Column<'py, u32, i32>> {
    let arr = as_int_array(py, name, obj)?;
    if let Ok(a) = arr.cast::<PyArray1<u32>>() {
        return Ok(Column::Unsigned(a.readonly()));
    }
    if let Ok(a) = arr.cast::<PyArray1<i32>>() {
        let ro = a.readonly();
        let values = ro.as_slice()?;
        if let Some(i) = values.iter().position(|&v| v < 0) {
            return Err(negative_error(name, i, i64::from(values[i])));
        }
        return Ok(Column::Signed(ro));
    }
    let too_big = |i: usize, v: &dyn std::fmt::Display| {
        PyValueError::new_err(format!("{name}[{i}] = {v} is above 2**32-1"))
    };
    if arr.dtype().kind() == b'u' {
        let wide = arr
            .call_method1("astype", ("uint64",))?
            .cast_into::<PyArray1<u64>>()?;
        let ro = wide.readonly();
        return ro
            .as_slice()?
            .iter()
            .enumerate()
            .map(|(i, &v)| u32::try_from(v).map_err(|_| too_big(i, &v)))
            .collect::<PyResult<Vec<u32>>>()
            .map(Column::Owned);
    }
    let wide = arr
        .call_method1("astype", ("int64",))?
        .cast_into::<PyArray1<i64>>()?;
    let ro = wide.readonly();
    ro.as_slice()?
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v < 0 {
                Err(negative_error(name, i, v))
            } else {
                u32::try_from(v).map_err(|_| too_big(i, &v))
            }
        })
        .collect::<PyResult<Vec<u32>>>()
        .map(Column::Owned)
}

static ENTRY_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Builds `list[Entry]` (the named tuple from `tieredindex._entry`).
fn entries_to_py<'py>(py: Python<'py>, entries: &[Entry]) -> PyResult<Bound<'py, PyList>> {
    let entry_type = ENTRY_TYPE.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("tieredindex._entry")?.getattr("Entry")?.unbind())
    })?;
    let entry_type = entry_type.bind(py);
    let items = entries
        .iter()
        .map(|e| entry_type.call1((e.queue_id, e.offset, e.size, e.timestamp_ms)))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

fn path_string(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// A hash-slot index over a memory-mapped, preallocated local file.
#[pyclass(name = "IndexFile", module = "tieredindex._native", frozen)]
struct PyIndexFile {
    core: IndexFile,
}

#[pymethods]
impl PyIndexFile {
    /// Preallocates and maps a new file that holds exactly `capacity` entries.
    #[staticmethod]
    #[pyo3(signature = (path, *, slots, capacity, begin_ms))]
    fn create(
        py: Python<'_>,
        path: PathBuf,
        slots: &Bound<'_, PyAny>,
        capacity: &Bound<'_, PyAny>,
        begin_ms: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let slots: u32 = int_arg(slots, "slots", U32_MAX)?;
        let capacity: u32 = int_arg(capacity, "capacity", U32_MAX)?;
        let begin_ms: u64 = int_arg(begin_ms, "begin_ms", I64_MAX)?;
        let core = without_gil(py, || IndexFile::create(&path, slots, capacity, begin_ms))?;
        Ok(Self { core })
    }

    /// Reopens a file after a clean close or a crash.
    #[staticmethod]
    fn open(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let core = without_gil(py, || IndexFile::open(&path))?;
        Ok(Self { core })
    }

    /// Puts one entry; False (writing nothing) when the file is full or sealed.
    fn put(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        queue_id: &Bound<'_, PyAny>,
        offset: &Bound<'_, PyAny>,
        size: &Bound<'_, PyAny>,
        timestamp_ms: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let fingerprint = key_fingerprint(key)?;
        let (queue_id, offset, size, timestamp_ms) =
            entry_numbers(queue_id, offset, size, timestamp_ms)?;
        let entry = NewEntry {
            fingerprint,
            queue_id,
            offset,
            size,
            timestamp_ms,
        };
        // Uncontended (the usual case): stay under the GIL, it is cheaper.
        // Contended (a seal or batch in progress): wait without the GIL.
        match guarded(|| Ok(self.core.try_put(&entry)))? {
            Some(result) => Ok(result?),
            None => without_gil(py, || self.core.put(&entry)),
        }
    }

    /// Puts many entries; returns how many were written (a prefix).
    fn put_batch<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        queue_ids: &Bound<'py, PyAny>,
        offsets: &Bound<'py, PyAny>,
        sizes: &Bound<'py, PyAny>,
        timestamps_ms: &Bound<'py, PyAny>,
    ) -> PyResult<usize> {
        let fingerprints = key_fingerprints(keys)?;
        let queue_ids = column_u32(py, "queue_ids", queue_ids)?;
        let offsets = column_u64(py, "offsets", offsets)?;
        let sizes = column_u32(py, "sizes", sizes)?;
        let timestamps = column_u64(py, "timestamps_ms", timestamps_ms)?;
        let batch = Batch {
            fingerprints: &fingerprints,
            queue_ids: queue_ids.as_slice(),
            offsets: offsets.as_slice(),
            sizes: sizes.as_slice(),
            timestamps_ms: timestamps.as_slice(),
        };
        without_gil(py, || self.core.put_batch(&batch))
    }

    /// Entries of exactly `key` with begin_ms <= timestamp_ms <= end_ms,
    /// newest first, at most max_count.
    fn query<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        begin_ms: &Bound<'py, PyAny>,
        end_ms: &Bound<'py, PyAny>,
        max_count: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let fp = key_fingerprint(key)?;
        let begin_ms: u64 = int_arg(begin_ms, "begin_ms", I64_MAX)?;
        let end_ms: u64 = int_arg(end_ms, "end_ms", I64_MAX)?;
        let max_count = query_max_count(max_count)?;
        let entries = match guarded(|| Ok(self.core.try_query(fp, begin_ms, end_ms, max_count)))? {
            Some(result) => result?,
            None => without_gil(py, || self.core.query(fp, begin_ms, end_ms, max_count))?,
        };
        entries_to_py(py, &entries)
    }

    /// msync: on return every entry put so far survives power loss.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        without_gil(py, || self.core.flush())
    }

    /// Stops writes and writes the sealed form to `dest_path` (fsynced
    /// unless `durable=False`).
    #[pyo3(signature = (dest_path, *, durable = true))]
    fn seal(&self, py: Python<'_>, dest_path: PathBuf, durable: bool) -> PyResult<PySealedIndex> {
        let sealed = without_gil(py, || self.core.seal(&dest_path, durable))?;
        Ok(PySealedIndex::new(sealed))
    }

    /// Checks every entry and chain link; returns the entry count.
    fn verify(&self, py: Python<'_>) -> PyResult<u32> {
        without_gil(py, || self.core.verify())
    }

    /// Every valid entry in put order, as (fingerprint, Entry) pairs.
    fn entries<'py>(&self, py: Python<'py>) -> PyResult<Vec<(u64, Bound<'py, PyAny>)>> {
        let pairs = without_gil(py, || self.core.entries())?;
        let plain: Vec<Entry> = pairs.iter().map(|(_, e)| *e).collect();
        let list = entries_to_py(py, &plain)?;
        Ok(pairs.iter().map(|(fp, _)| *fp).zip(list.iter()).collect())
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        without_gil(py, || self.core.close())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    #[getter]
    fn path(&self) -> String {
        path_string(self.core.path())
    }
    #[getter]
    fn slots(&self, py: Python<'_>) -> u32 {
        self.summary(py).slots
    }
    #[getter]
    fn capacity(&self, py: Python<'_>) -> u32 {
        self.summary(py).capacity
    }
    #[getter]
    fn count(&self, py: Python<'_>) -> u32 {
        self.summary(py).count
    }
    #[getter]
    fn used_slots(&self, py: Python<'_>) -> u32 {
        self.summary(py).used_slots
    }
    #[getter]
    fn begin_ms(&self, py: Python<'_>) -> u64 {
        self.summary(py).begin_ms
    }
    #[getter]
    fn end_ms(&self, py: Python<'_>) -> u64 {
        self.summary(py).end_ms
    }
    #[getter]
    fn sealed(&self, py: Python<'_>) -> bool {
        self.summary(py).sealed
    }
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        self.summary(py).closed
    }
    /// True when open() found the file not closed cleanly and rebuilt it.
    #[getter]
    fn recovered(&self) -> bool {
        self.core.open_report().recovered
    }
    /// Entry records past the valid prefix that open() dropped.
    #[getter]
    fn dropped_entries(&self) -> u64 {
        self.core.open_report().dropped_entries
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let s = self.summary(py);
        format!(
            "IndexFile(path={:?}, count={}, capacity={}, slots={}, sealed={})",
            path_string(self.core.path()),
            s.count,
            s.capacity,
            s.slots,
            s.sealed
        )
    }
}

impl PyIndexFile {
    /// The file's figures without holding the GIL while a put_batch, flush
    /// or seal in another thread holds the file: reading a property must
    /// not freeze every Python thread for the length of a seal.
    fn summary(&self, py: Python<'_>) -> Summary {
        self.core
            .try_summary()
            .unwrap_or_else(|| detached(py, || self.core.summary()))
    }
}

/// `max_count`: an int of at least 1; any larger value than usize holds
/// means "all".
fn query_max_count(max_count: &Bound<'_, PyAny>) -> PyResult<usize> {
    match index_arg(max_count, "max_count")? {
        Some(n) if n < 1 => Err(PyValueError::new_err(format!(
            "max_count must be at least 1, got {n}"
        ))),
        Some(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        None if max_count.gt(0)? => Ok(usize::MAX),
        None => Err(PyValueError::new_err(format!(
            "max_count must be at least 1, got {max_count}"
        ))),
    }
}

/// The compact, checksummed, immutable form of an index file.
#[pyclass(name = "SealedIndex", module = "tieredindex._native", frozen)]
struct PySealedIndex {
    core: SealedIndex,
}

impl PySealedIndex {
    fn new(core: SealedIndex) -> Self {
        Self { core }
    }
}

#[pymethods]
impl PySealedIndex {
    /// Reads a sealed file from a path, or from a bytes-like object.
    #[staticmethod]
    fn open(py: Python<'_>, path_or_buffer: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(path) = path_or_buffer.extract::<PathBuf>() {
            if !path_or_buffer.is_instance_of::<PyBytes>() {
                let core = without_gil(py, || SealedIndex::open_path(&path))?;
                return Ok(Self::new(core));
            }
        }
        let buffer = RawBuffer::get(path_or_buffer, "path_or_buffer")?;
        let bytes = buffer.as_slice().to_vec();
        drop(buffer);
        let core = without_gil(py, || SealedIndex::from_bytes("<buffer>".to_owned(), bytes))?;
        Ok(Self::new(core))
    }

    fn query<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        begin_ms: &Bound<'py, PyAny>,
        end_ms: &Bound<'py, PyAny>,
        max_count: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let fp = key_fingerprint(key)?;
        let begin_ms: u64 = int_arg(begin_ms, "begin_ms", I64_MAX)?;
        let end_ms: u64 = int_arg(end_ms, "end_ms", I64_MAX)?;
        let max_count = query_max_count(max_count)?;
        // A hot key's run is scanned without the GIL; a short one is not
        // worth the release.
        let entries = match guarded(|| self.core.try_query(fp, begin_ms, end_ms, max_count))? {
            Some(entries) => entries,
            None => without_gil(py, || self.core.query(fp, begin_ms, end_ms, max_count))?,
        };
        entries_to_py(py, &entries)
    }

    /// Checks every checksum and the structure; raises CorruptFileError.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        without_gil(py, || self.core.verify())
    }

    #[getter]
    fn path(&self) -> Option<String> {
        self.core.path().map(path_string)
    }
    #[getter]
    fn name(&self) -> &str {
        self.core.name()
    }
    #[getter]
    fn count(&self) -> u32 {
        self.core.count()
    }
    #[getter]
    fn slots(&self) -> u32 {
        self.core.slots()
    }
    #[getter]
    fn used_slots(&self) -> u32 {
        self.core.used_slots()
    }
    #[getter]
    fn begin_ms(&self) -> u64 {
        self.core.begin_ms()
    }
    #[getter]
    fn end_ms(&self) -> u64 {
        self.core.end_ms()
    }
    /// Size of the whole object in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.core.size()
    }
    /// CRC-32C of the whole object.
    #[getter]
    fn crc32c(&self) -> u32 {
        self.core.crc32c()
    }
    /// Smallest timestamp in the file (begin_ms when empty).
    #[getter]
    fn min_timestamp_ms(&self) -> u64 {
        self.core.min_ms()
    }
    #[getter]
    fn block_size(&self) -> u32 {
        self.core.footer().geometry.block_size
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> bool {
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "SealedIndex(name={:?}, count={}, size={}, crc32c=0x{:08x})",
            self.core.name(),
            self.core.count(),
            self.core.size(),
            self.core.crc32c()
        )
    }
}

/// The footer of a sealed object, for readers that fetch byte ranges: read
/// the footer once, then the slot record span, then the run span, each
/// verified against the footer's block checksums.
#[pyclass(name = "SealedFooter", module = "tieredindex._native", frozen)]
struct PySealedFooter {
    footer: Footer,
    name: String,
}

#[pymethods]
impl PySealedFooter {
    /// How many bytes at the end of the object hold the footer, from its
    /// last 40 bytes.
    #[staticmethod]
    #[pyo3(signature = (trailer, object_size, name = "<object>"))]
    fn footer_len(trailer: &Bound<'_, PyAny>, object_size: u64, name: &str) -> PyResult<u64> {
        let buffer = RawBuffer::get(trailer, "trailer")?;
        guarded(|| Footer::footer_len(buffer.as_slice(), object_size, name))
    }

    /// Parses and checks the footer from the last bytes of the object.
    #[staticmethod]
    #[pyo3(signature = (tail, object_size, name = "<object>"))]
    fn parse(tail: &Bound<'_, PyAny>, object_size: u64, name: &str) -> PyResult<Self> {
        let buffer = RawBuffer::get(tail, "tail")?;
        let footer = guarded(|| Footer::parse(buffer.as_slice(), object_size, name))?;
        Ok(Self {
            footer,
            name: name.to_owned(),
        })
    }

    /// Block-aligned byte range (start, end) holding the slot record of `key`.
    fn slot_span(&self, key: &Bound<'_, PyAny>) -> PyResult<(u64, u64)> {
        let (s, e) = self.footer.geometry.slot_record(key_fingerprint(key)?);
        Ok(self.footer.geometry.block_span(s, e))
    }

    /// Block-aligned byte range (start, end) holding a run of entries.
    fn run_span(&self, run: (u32, u32)) -> (u64, u64) {
        let (s, e) = self.footer.geometry.entries_range(run.0, run.1);
        self.footer.geometry.block_span(s, e)
    }

    /// Verifies `data` (whole blocks starting at `start`) against the footer.
    fn verify_span(&self, start: u64, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let buffer = RawBuffer::get(data, "data")?;
        guarded(|| {
            self.footer
                .verify_span(start, buffer.as_slice(), &self.name)
        })
    }

    /// Verifies the span, then returns the (first, count) run of `key`.
    fn slot_run(
        &self,
        start: u64,
        data: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<(u32, u32)> {
        let fp = key_fingerprint(key)?;
        let buffer = RawBuffer::get(data, "data")?;
        guarded(|| {
            self.footer
                .verify_span(start, buffer.as_slice(), &self.name)?;
            self.footer
                .slot_run(start, buffer.as_slice(), fp, &self.name)
        })
    }

    /// Verifies the span, then returns the matching entries of the run.
    #[allow(clippy::too_many_arguments)]
    fn match_run<'py>(
        &self,
        py: Python<'py>,
        start: u64,
        data: &Bound<'py, PyAny>,
        run: (u32, u32),
        key: &Bound<'py, PyAny>,
        begin_ms: &Bound<'py, PyAny>,
        end_ms: &Bound<'py, PyAny>,
        max_count: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let fp = key_fingerprint(key)?;
        let begin_ms: u64 = int_arg(begin_ms, "begin_ms", I64_MAX)?;
        let end_ms: u64 = int_arg(end_ms, "end_ms", I64_MAX)?;
        let max_count = query_max_count(max_count)?;
        let buffer = RawBuffer::get(data, "data")?;
        let entries = guarded(|| {
            self.footer
                .verify_span(start, buffer.as_slice(), &self.name)?;
            self.footer.match_run(
                start,
                buffer.as_slice(),
                run,
                fp,
                begin_ms,
                end_ms,
                max_count,
                &self.name,
            )
        })?;
        entries_to_py(py, &entries)
    }

    #[getter]
    fn count(&self) -> u32 {
        self.footer.geometry.count
    }
    #[getter]
    fn slots(&self) -> u32 {
        self.footer.geometry.slots
    }
    #[getter]
    fn block_size(&self) -> u32 {
        self.footer.geometry.block_size
    }
    #[getter]
    fn data_len(&self) -> u64 {
        self.footer.geometry.data_len
    }
    #[getter]
    fn size(&self) -> u64 {
        self.footer.object_len
    }
    #[getter]
    fn crc32c(&self) -> u32 {
        self.footer.object_crc
    }
    #[getter]
    fn data_crc32c(&self) -> u32 {
        self.footer.data_crc
    }
}

/// Copies every intact entry of a damaged unsealed file into a new file;
/// returns (kept, damaged).
#[pyfunction]
fn salvage(py: Python<'_>, src: PathBuf, dest: PathBuf) -> PyResult<(u64, u64)> {
    let report = without_gil(py, || crate::index::salvage(&src, &dest))?;
    Ok((report.kept, report.damaged))
}

/// An entry's numbers, checked: (queue_id, offset, size, timestamp_ms).
fn entry_numbers(
    queue_id: &Bound<'_, PyAny>,
    offset: &Bound<'_, PyAny>,
    size: &Bound<'_, PyAny>,
    timestamp_ms: &Bound<'_, PyAny>,
) -> PyResult<(u32, u64, u32, u64)> {
    Ok((
        int_arg(queue_id, "queue_id", U32_MAX)?,
        int_arg(offset, "offset", I64_MAX)?,
        int_arg(size, "size", U32_MAX)?,
        int_arg(timestamp_ms, "timestamp_ms", I64_MAX)?,
    ))
}

/// Checks an entry's numbers as `IndexFile.put` does, without a file: the
/// store checks them before it makes a file for the put.
#[pyfunction]
fn check_entry_args(
    queue_id: &Bound<'_, PyAny>,
    offset: &Bound<'_, PyAny>,
    size: &Bound<'_, PyAny>,
    timestamp_ms: &Bound<'_, PyAny>,
) -> PyResult<()> {
    entry_numbers(queue_id, offset, size, timestamp_ms).map(drop)
}

/// The fingerprint the index stores for a key (XXH3-64 of its bytes).
#[pyfunction]
fn key_fingerprint_of(key: &Bound<'_, PyAny>) -> PyResult<u64> {
    key_fingerprint(key)
}

// ---------------------------------------------------------------- RocketMQ

/// UTF-16 code units of a Python `str`, lone surrogates included (Java
/// strings may hold them, so RocketMQ hashes them).
fn utf16_units(s: &Bound<'_, PyString>) -> PyResult<Vec<u16>> {
    if let Ok(text) = s.to_str() {
        return Ok(text.encode_utf16().collect());
    }
    let raw = s.call_method1("encode", ("utf-16-le", "surrogatepass"))?;
    let raw = raw.cast::<PyBytes>()?;
    Ok(raw
        .as_bytes()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect())
}

fn str_arg<'a, 'py>(obj: &'a Bound<'py, PyAny>, name: &str) -> PyResult<&'a Bound<'py, PyString>> {
    obj.cast::<PyString>().map_err(|_| {
        let type_name = type_name_of(obj);
        PyTypeError::new_err(format!("{name} must be a str, not {type_name}"))
    })
}

/// RocketMQ's hash of `topic + "#" + key`: Java `String.hashCode` over
/// UTF-16 code units, negated when negative.
fn rocketmq_hash_args(topic: &Bound<'_, PyAny>, key: &Bound<'_, PyAny>) -> PyResult<i32> {
    let mut units = utf16_units(str_arg(topic, "topic")?)?;
    units.push(u16::from(b'#'));
    units.extend(utf16_units(str_arg(key, "key")?)?);
    Ok(crate::rocketmq::rocketmq_hash_of(
        crate::rocketmq::java_hash_utf16(units),
    ))
}

/// Java `String.hashCode` of `s` (over UTF-16 code units).
#[pyfunction]
fn java_string_hash(s: &Bound<'_, PyAny>) -> PyResult<i32> {
    Ok(crate::rocketmq::java_hash_utf16(utf16_units(str_arg(
        s, "s",
    )?)?))
}

/// RocketMQ's index hash of (topic, key): `abs(hash(topic + "#" + key))`.
#[pyfunction]
fn rocketmq_key_hash(topic: &Bound<'_, PyAny>, key: &Bound<'_, PyAny>) -> PyResult<i32> {
    rocketmq_hash_args(topic, key)
}

/// Byte position of slot `slot` in a RocketMQ index file (either layout).
#[pyfunction]
fn rocketmq_slot_position(slot: u32) -> u64 {
    crate::rocketmq::slot_position(slot)
}

/// Byte position of item `index` of an unsealed RocketMQ file.
#[pyfunction]
fn rocketmq_item_position(max_slots: u32, index: u32) -> u64 {
    crate::rocketmq::item_position(max_slots, index)
}

type RocketMqItemTuple = (i32, i32, i32, i64, i32, i32, i64, u64);
type RocketMqReportTuple = (u32, u32, i64, i64, u32, Vec<String>, u64);
type RocketMqImportTuple = (u32, u64, u64, u32);

fn rocketmq_item_tuple(it: &crate::rocketmq::Item) -> RocketMqItemTuple {
    (
        it.hash,
        it.topic_id,
        it.queue_id,
        it.offset,
        it.size,
        it.time_diff,
        it.timestamp_ms,
        it.position,
    )
}

fn rocketmq_report_tuple(r: crate::rocketmq::Report) -> RocketMqReportTuple {
    (
        r.items,
        r.used_slots,
        r.min_ms,
        r.max_ms,
        r.longest_run,
        r.warnings,
        r.warning_count,
    )
}

/// A RocketMQ tiered index file (RIP-65), unsealed or compacted, read with
/// positioned reads. Items come back as tuples (hash, topic_id, queue_id,
/// offset, size, time_diff, timestamp_ms, position).
#[pyclass(name = "RocketMQFile", module = "tieredindex._native", frozen)]
struct PyRocketMqFile {
    core: crate::rocketmq::RocketMqFile,
    path: Option<String>,
}

#[pymethods]
impl PyRocketMqFile {
    /// Opens a file from a path or a bytes-like object. `layout` is
    /// "unsealed" or "compacted" (detected when None); `max_slots` and
    /// `max_items` are RocketMQ's capacities (detected from the size and
    /// slot table where that is unambiguous).
    #[staticmethod]
    #[pyo3(signature = (path_or_buffer, *, layout = None, max_slots = None, max_items = None))]
    fn open(
        py: Python<'_>,
        path_or_buffer: &Bound<'_, PyAny>,
        layout: Option<&str>,
        max_slots: Option<&Bound<'_, PyAny>>,
        max_items: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        use crate::rocketmq::{Hints, Layout, RocketMqFile};
        // As every integer argument: no bool (True is no capacity), and a
        // negative one named, not "out of range integral type conversion".
        let capacity = |obj: Option<&Bound<'_, PyAny>>, name: &str| {
            obj.map(|o| int_arg::<u32>(o, name, U32_MAX)).transpose()
        };
        let hints = Hints {
            layout: layout.map(Layout::parse).transpose()?,
            max_slots: capacity(max_slots, "max_slots")?,
            max_items: capacity(max_items, "max_items")?,
        };
        if let Ok(path) = path_or_buffer.extract::<PathBuf>() {
            if !path_or_buffer.is_instance_of::<PyBytes>() {
                let core = without_gil(py, || RocketMqFile::open_path(&path, hints))?;
                return Ok(Self {
                    core,
                    path: Some(path_string(&path)),
                });
            }
        }
        let buffer = RawBuffer::get(path_or_buffer, "path_or_buffer")?;
        let bytes = buffer.as_slice().to_vec();
        drop(buffer);
        let core = without_gil(py, || {
            RocketMqFile::from_bytes("<buffer>".to_owned(), bytes, hints)
        })?;
        Ok(Self { core, path: None })
    }

    /// RocketMQ's query of this file for `topic#key`: newest first, at most
    /// `max_count`, `begin_ms <= time <= end_ms`, only `topic_id` if given.
    #[pyo3(signature = (topic, key, begin_ms, end_ms, max_count, topic_id = None))]
    fn query(
        &self,
        topic: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
        begin_ms: &Bound<'_, PyAny>,
        end_ms: &Bound<'_, PyAny>,
        max_count: &Bound<'_, PyAny>,
        topic_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<RocketMqItemTuple>> {
        let hash = rocketmq_hash_args(topic, key)?;
        self.query_i32_hash(hash, begin_ms, end_ms, max_count, topic_id)
    }

    /// The same, for a hash already computed.
    #[pyo3(signature = (hash, begin_ms, end_ms, max_count, topic_id = None))]
    fn query_hash(
        &self,
        hash: &Bound<'_, PyAny>,
        begin_ms: &Bound<'_, PyAny>,
        end_ms: &Bound<'_, PyAny>,
        max_count: &Bound<'_, PyAny>,
        topic_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<RocketMqItemTuple>> {
        let hash: i32 = signed_arg(hash, "hash")?;
        self.query_i32_hash(hash, begin_ms, end_ms, max_count, topic_id)
    }

    /// Structural verification; raises CorruptFileError naming the byte.
    /// Returns (items, used_slots, min_ms, max_ms, longest_run, warnings,
    /// warning_count).
    fn verify(&self, py: Python<'_>) -> PyResult<RocketMqReportTuple> {
        let report = without_gil(py, || self.core.verify())?;
        Ok(rocketmq_report_tuple(report))
    }

    /// Verifies, then writes the items into a new unsealed IndexFile at
    /// `dest_path`, keyed by index_key(ROCKETMQ_IMPORT_TOPIC,
    /// f"{topic_id}#{hash}"). Returns (verify report, (count, min_ms,
    /// max_ms, content_crc32c) or None when the file is empty).
    fn import_to(
        &self,
        py: Python<'_>,
        dest_path: PathBuf,
    ) -> PyResult<(RocketMqReportTuple, Option<RocketMqImportTuple>)> {
        let (report, imported) = without_gil(py, || self.core.import_to(&dest_path))?;
        Ok((
            rocketmq_report_tuple(report),
            imported.map(|i| (i.count, i.min_ms, i.max_ms, i.content_crc)),
        ))
    }

    #[getter]
    fn path(&self) -> Option<String> {
        self.path.clone()
    }
    #[getter]
    fn name(&self) -> &str {
        self.core.name()
    }
    #[getter]
    fn layout(&self) -> &'static str {
        self.core.layout().name()
    }
    #[getter]
    fn max_slots(&self) -> u32 {
        self.core.max_slots()
    }
    #[getter]
    fn max_items(&self) -> u32 {
        self.core.max_items()
    }
    #[getter]
    fn size(&self) -> u64 {
        self.core.len()
    }
    #[getter]
    fn magic(&self) -> u32 {
        self.core.header().magic
    }
    #[getter]
    fn begin_ms(&self) -> i64 {
        self.core.header().begin_ms
    }
    #[getter]
    fn end_ms(&self) -> i64 {
        self.core.header().end_ms
    }
    /// Used slots, as the header counts them.
    #[getter]
    fn slot_count(&self) -> i32 {
        self.core.header().slot_count
    }
    /// Items, as the header counts them.
    #[getter]
    fn item_count(&self) -> i32 {
        self.core.header().item_count
    }

    fn __repr__(&self) -> String {
        format!(
            "RocketMQFile(name={:?}, layout={}, items={}, slots={})",
            self.core.name(),
            self.core.layout().name(),
            self.core.header().item_count,
            self.core.max_slots()
        )
    }
}

impl PyRocketMqFile {
    /// A query for a hash (RocketMQ's Java int), its other arguments as given.
    fn query_i32_hash(
        &self,
        hash: i32,
        begin_ms: &Bound<'_, PyAny>,
        end_ms: &Bound<'_, PyAny>,
        max_count: &Bound<'_, PyAny>,
        topic_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<RocketMqItemTuple>> {
        let begin_ms: i64 = signed_arg(begin_ms, "begin_ms")?;
        let end_ms: i64 = signed_arg(end_ms, "end_ms")?;
        let topic_id: Option<i32> = topic_id.map(|t| signed_arg(t, "topic_id")).transpose()?;
        let max_count = query_max_count(max_count)?;
        let items = guarded(|| {
            self.core
                .query_hash(hash, begin_ms, end_ms, max_count, topic_id)
        })?;
        Ok(items.iter().map(rocketmq_item_tuple).collect())
    }
}

fn add_rocketmq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(java_string_hash, m)?)?;
    m.add_function(wrap_pyfunction!(rocketmq_key_hash, m)?)?;
    m.add_function(wrap_pyfunction!(rocketmq_slot_position, m)?)?;
    m.add_function(wrap_pyfunction!(rocketmq_item_position, m)?)?;
    m.add_class::<PyRocketMqFile>()?;
    m.add("ROCKETMQ_IMPORT_TOPIC", crate::rocketmq::IMPORT_TOPIC)?;
    m.add("ROCKETMQ_BEGIN_MAGIC", crate::rocketmq::BEGIN_MAGIC)?;
    m.add("ROCKETMQ_END_MAGIC", crate::rocketmq::END_MAGIC)?;
    Ok(())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("FORMAT_VERSION", crate::format::FORMAT_VERSION)?;
    m.add_function(wrap_pyfunction!(crc32c, m)?)?;
    m.add_function(wrap_pyfunction!(key_fingerprint_of, m)?)?;
    m.add_function(wrap_pyfunction!(check_entry_args, m)?)?;
    m.add_function(wrap_pyfunction!(salvage, m)?)?;
    m.add_class::<PyIndexFile>()?;
    m.add_class::<PySealedIndex>()?;
    m.add_class::<PySealedFooter>()?;
    add_rocketmq(m)?;
    m.add("TieredIndexError", py.get_type::<TieredIndexError>())?;
    m.add("CorruptFileError", py.get_type::<CorruptFileError>())?;
    m.add("StoreClosedError", py.get_type::<StoreClosedError>())?;
    m.add("StoreLockedError", py.get_type::<StoreLockedError>())?;
    m.add("RemoteError", py.get_type::<RemoteError>())?;
    Ok(())
}
