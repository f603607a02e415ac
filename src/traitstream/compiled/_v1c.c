/*
 * The v1 record's two hot functions in C: ``read_event`` (the workers, once per
 * record delivered) and ``encode_body`` (the edge, once per identify).
 *
 * They give what the reference codec gives (``avro/binary.py`` with
 * ``avro/record.py``'s ``from_record``), byte for byte and value for value;
 * ``avro/fast.py`` binds this module at import (``bind``) and ``avro/codec.py``
 * falls back to the reference whenever this one refuses.
 * Both read and write the v1 schema's first revision only (identify and erase);
 * aliases, in the current revision, are the reference's alone.
 *
 * - ``read_event(data, start)`` returns the event of a record it can prove valid
 *   with cheap checks, and raises ``ValueError`` (the bound ``NotPlain``, or
 *   orjson's or UTF-8's own error) for anything else; a varint longer than 64
 *   bits is refused here, and the reference decides about it.
 * - ``encode_body(event, header)`` returns ``header`` plus the Avro body, and raises
 *   for anything but an ordinary event (a non-str id, an int past 64 bits, an
 *   unknown kind or operation); the Python encoder then decides what happens.
 *
 * tests/unit/test_codec.py runs both directions against the reference on random
 * and corrupted records, and tests/fuzz under AddressSanitizer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "_named_tuple.h"
#include "_shared_names.h"

/* The Python side, set once by bind(). */
static PyObject *EventType;     /* traitstream.events.IdentifyEvent */
static PyObject *OperationType; /* traitstream.events.Operation */
static PyObject *Kinds;         /* (Kind.IDENTIFY, Kind.ERASE): by enum index */
static PyObject *Ops;           /* every Op, by enum index */
static PyObject *KindIndex;     /* {Kind: enum index} */
static PyObject *OpIndex;       /* {Op: enum index} */
static PyObject *Loads;         /* orjson.loads */
static PyObject *Dumps;         /* orjson.dumps */
static PyObject *NotPlain;      /* the exception for "the Python code decides" */
static Py_ssize_t MaxIdChars;

/* Enum indexes of the v1 schema (avro/binary.py's KINDS and OPS). */
#define KIND_IDENTIFY 0
#define KIND_ERASE 1
#define OP_UNSET 2
#define OP_ADD 3
#define OP_CLEAR_ALL 9
#define N_OPS 10

/* Fields of IdentifyEvent, in its declared order. */
enum {
    F_WORKSPACE_ID, F_USER_ID, F_DIALECT, F_EVENT_TIME, F_RECEIVED_TIME, F_RESPONSE_ID,
    F_EVENT_INDEX, F_ANONYMOUS_IDS, F_CREATED, F_DEDUPE_KEY, F_CONTEXT, F_OPERATIONS,
    F_KIND, F_PREVIOUS_ID, N_FIELDS
};

/* What a timestamp-millis reader can turn into a date (years 1 to 9999). */
#define MIN_MILLIS (-62135596800000LL)
#define MAX_MILLIS (253402300799999LL)

/* ------------------------------------------------------------------------------ */
/* Reading                                                                         */
/* ------------------------------------------------------------------------------ */

typedef struct {
    const unsigned char *data;
    Py_ssize_t pos;
    Py_ssize_t len;
} Cursor;

static int
not_plain(void)
{
    PyErr_SetNone(NotPlain);
    return -1;
}

/* A zigzag varint of at most 64 bits. */
static int
read_long(Cursor *c, long long *out)
{
    uint64_t n = 0;
    int shift = 0;
    unsigned char byte;
    do {
        if (c->pos >= c->len) {
            return not_plain();
        }
        byte = c->data[c->pos++];
        if (shift == 63 && byte > 1) {
            return not_plain(); /* past 64 bits */
        }
        n |= (uint64_t)(byte & 0x7F) << shift;
        shift += 7;
    } while (byte & 0x80);
    *out = (long long)(n >> 1) ^ -(long long)(n & 1);
    return 0;
}

static int
read_bytes(Cursor *c, const unsigned char **start, Py_ssize_t *size)
{
    long long n;
    if (read_long(c, &n) < 0) {
        return -1;
    }
    if (n < 0 || n > c->len - c->pos) {
        return not_plain();
    }
    *start = c->data + c->pos;
    *size = (Py_ssize_t)n;
    c->pos += (Py_ssize_t)n;
    return 0;
}

static int
read_byte(Cursor *c, unsigned char *out)
{
    if (c->pos >= c->len) {
        return not_plain();
    }
    *out = c->data[c->pos++];
    return 0;
}

/* A string holding no NUL (PostgreSQL stores none); ``shared``: one of the names
 * above. */
static PyObject *
read_string(Cursor *c, int shared)
{
    const unsigned char *start;
    Py_ssize_t size;
    if (read_bytes(c, &start, &size) < 0) {
        return NULL;
    }
    if (memchr(start, 0, (size_t)size) != NULL) {
        not_plain();
        return NULL;
    }
    if (shared) {
        return shared_name((const char *)start, size);
    }
    return PyUnicode_DecodeUTF8((const char *)start, size, NULL);
}

static PyObject *
read_text(Cursor *c)
{
    return read_string(c, 0);
}

/* An optional string: None, or a string as read_string reads it. */
static PyObject *
read_optional_string(Cursor *c, int shared)
{
    unsigned char branch;
    if (read_byte(c, &branch) < 0) {
        return NULL;
    }
    if (branch == 0) {
        Py_RETURN_NONE;
    }
    if (branch != 2) {
        not_plain();
        return NULL;
    }
    return read_string(c, shared);
}

/* A non-empty id of at most MaxIdChars characters. */
static PyObject *
read_id_string(Cursor *c, int shared)
{
    PyObject *text = read_string(c, shared);
    if (text != NULL) {
        Py_ssize_t length = PyUnicode_GET_LENGTH(text);
        if (length == 0 || length > MaxIdChars) {
            Py_DECREF(text);
            not_plain();
            return NULL;
        }
    }
    return text;
}

static PyObject *
read_id(Cursor *c)
{
    return read_id_string(c, 0);
}

static int
read_millis(Cursor *c, long long *out)
{
    if (read_long(c, out) < 0) {
        return -1;
    }
    if (*out < MIN_MILLIS || *out > MAX_MILLIS) {
        return not_plain();
    }
    return 0;
}

/* The item count of an array block; a negative count is followed by a byte size. */
static int
read_count(Cursor *c, long long *count)
{
    long long size;
    if (read_long(c, count) < 0) {
        return -1;
    }
    if (*count < 0) {
        if (*count == LLONG_MIN) {
            return not_plain();
        }
        *count = -*count;
        return read_long(c, &size);
    }
    return 0;
}

/* Whether JSON text spells a NUL (\u0000): then the full path walks the value. */
static int
spells_nul(const unsigned char *text, Py_ssize_t size)
{
    const unsigned char *end = text + size;
    const unsigned char *p = text;
    while (p < end && (p = memchr(p, '\\', (size_t)(end - p))) != NULL) {
        if (end - p >= 6 && memcmp(p, "\\u0000", 6) == 0) {
            return 1;
        }
        p += 1;
    }
    return 0;
}

/* The value of JSON text that is a plain scalar: a string with nothing escaped, an
 * integer of at most 18 digits, true, false or null; NULL without an error for any
 * other text (and for a string that is not UTF-8), which orjson then parses. Most
 * trait values are such scalars, and orjson's call costs several times the parse. */
static PyObject *
plain_scalar(const unsigned char *text, Py_ssize_t size)
{
    if (size >= 2 && text[0] == '"' && text[size - 1] == '"') {
        for (Py_ssize_t i = 1; i < size - 1; i++) {
            if (text[i] < 0x20 || text[i] == '"' || text[i] == '\\') {
                return NULL;
            }
        }
        PyObject *value = PyUnicode_DecodeUTF8((const char *)text + 1, size - 2, NULL);
        if (value == NULL) {
            PyErr_Clear();
        }
        return value;
    }
    Py_ssize_t i = text[0] == '-' ? 1 : 0; /* size > 0: read_json sees to it */
    Py_ssize_t digits = size - i;
    if (digits >= 1 && digits <= 18 && text[i] >= '0' && text[i] <= '9' && (text[i] != '0' || digits == 1)) {
        long long n = 0;
        for (; i < size; i++) {
            if (text[i] < '0' || text[i] > '9') {
                return NULL;
            }
            n = n * 10 + (text[i] - '0');
        }
        return PyLong_FromLongLong(text[0] == '-' ? -n : n);
    }
    if (size == 4 && memcmp(text, "true", 4) == 0) {
        Py_RETURN_TRUE;
    }
    if (size == 5 && memcmp(text, "false", 5) == 0) {
        Py_RETURN_FALSE;
    }
    if (size == 4 && memcmp(text, "null", 4) == 0) {
        Py_RETURN_NONE;
    }
    return NULL;
}

/* A present JSON string (value_json or context_json), parsed as orjson parses it. */
static PyObject *
read_json(Cursor *c)
{
    const unsigned char *start;
    Py_ssize_t size;
    if (read_bytes(c, &start, &size) < 0) {
        return NULL;
    }
    if (size > 0) {
        PyObject *value = plain_scalar(start, size);
        if (value != NULL || PyErr_Occurred()) {
            return value;
        }
    }
    if (spells_nul(start, size)) {
        not_plain();
        return NULL;
    }
    PyObject *raw = PyBytes_FromStringAndSize((const char *)start, size);
    if (raw == NULL) {
        return NULL;
    }
    PyObject *value = PyObject_CallOneArg(Loads, raw);
    Py_DECREF(raw);
    return value;
}

static PyObject *
read_operation(Cursor *c)
{
    unsigned char code;
    if (read_byte(c, &code) < 0) {
        return NULL;
    }
    if ((code & 1) || (code >> 1) >= N_OPS) {
        not_plain(); /* "unknown", or an index no operation has */
        return NULL;
    }
    int op = code >> 1;
    PyObject *trait = read_optional_string(c, 1);
    if (trait == NULL) {
        return NULL;
    }
    if (op != OP_CLEAR_ALL && (trait == Py_None || PyUnicode_GET_LENGTH(trait) == 0)) {
        Py_DECREF(trait);
        not_plain();
        return NULL;
    }
    unsigned char branch;
    PyObject *value = NULL;
    if (read_byte(c, &branch) < 0) {
        goto fail;
    }
    if (branch == 2) {
        value = read_json(c);
        if (value == NULL) {
            goto fail;
        }
        if (op == OP_ADD && !PyLong_CheckExact(value) && !PyFloat_CheckExact(value)) {
            not_plain();
            goto fail;
        }
    } else if (branch == 0 && (op == OP_UNSET || op == OP_CLEAR_ALL)) {
        value = Py_NewRef(Py_None);
    } else {
        not_plain();
        goto fail;
    }
    PyObject *items[3] = {Py_NewRef(PyTuple_GET_ITEM(Ops, op)), trait, value};
    return named_tuple(OperationType, items, 3);
fail:
    Py_DECREF(trait);
    Py_XDECREF(value);
    return NULL;
}

/* Read an Avro array with ``read`` into ``out``. */
static int
read_array(Cursor *c, PyObject *out, PyObject *(*read)(Cursor *))
{
    long long count;
    for (;;) {
        if (read_count(c, &count) < 0) {
            return -1;
        }
        if (count == 0) {
            return 0;
        }
        for (; count > 0; count--) {
            PyObject *item = read(c);
            if (item == NULL) {
                return -1;
            }
            int failed = PyList_Append(out, item);
            Py_DECREF(item);
            if (failed) {
                return -1;
            }
        }
    }
}

static PyObject *
long_or_none(int present, long long value)
{
    if (!present) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong(value);
}

/* ``text or None``: empty ids and keys mean absent. */
static PyObject *
none_if_empty(PyObject *text)
{
    if (text != Py_None && PyUnicode_GET_LENGTH(text) == 0) {
        Py_DECREF(text);
        Py_RETURN_NONE;
    }
    return text;
}

static PyObject *
read_event(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (EventType == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "traitstream.compiled._v1c: bind() was not called");
        return NULL;
    }
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "read_event(data: bytes, start: int)");
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        not_plain(); /* another buffer type: the Python functions read it */
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Cursor c = {(const unsigned char *)PyBytes_AS_STRING(args[0]), start, PyBytes_GET_SIZE(args[0])};
    if (start < 0 || start > c.len) {
        not_plain();
        return NULL;
    }

    PyObject *f[N_FIELDS] = {NULL};
    PyObject *anonymous = NULL, *operations = NULL;
    unsigned char byte;
    long long event_time, received_time, created = 0, event_index;
    int has_created = 0;

    if (read_byte(&c, &byte) < 0) {
        goto fail;
    }
    if (byte != 0 && byte != 2) {
        not_plain();
        goto fail;
    }
    f[F_KIND] = Py_NewRef(PyTuple_GET_ITEM(Kinds, byte >> 1));
    if ((f[F_WORKSPACE_ID] = read_id_string(&c, 1)) == NULL) {
        goto fail;
    }
    if ((f[F_USER_ID] = read_optional_string(&c, 0)) == NULL) {
        goto fail;
    }
    if (f[F_USER_ID] != Py_None && PyUnicode_GET_LENGTH(f[F_USER_ID]) > MaxIdChars) {
        not_plain();
        goto fail;
    }
    if ((anonymous = PyList_New(0)) == NULL || read_array(&c, anonymous, read_id) < 0) {
        goto fail;
    }
    f[F_USER_ID] = none_if_empty(f[F_USER_ID]);
    if (f[F_USER_ID] == Py_None && PyList_GET_SIZE(anonymous) == 0) {
        not_plain();
        goto fail;
    }
    if ((f[F_DIALECT] = read_string(&c, 1)) == NULL) {
        goto fail;
    }
    if (read_millis(&c, &event_time) < 0 || read_millis(&c, &received_time) < 0) {
        goto fail;
    }
    if (read_byte(&c, &byte) < 0) {
        goto fail;
    }
    if (byte == 2) {
        if (read_millis(&c, &created) < 0) {
            goto fail;
        }
        has_created = 1;
    } else if (byte != 0) {
        not_plain();
        goto fail;
    }
    if ((f[F_RESPONSE_ID] = read_text(&c)) == NULL) {
        goto fail;
    }
    if (PyUnicode_GET_LENGTH(f[F_RESPONSE_ID]) == 0) {
        not_plain();
        goto fail;
    }
    if (read_long(&c, &event_index) < 0) {
        goto fail;
    }
    if ((f[F_DEDUPE_KEY] = read_optional_string(&c, 0)) == NULL) {
        goto fail;
    }
    f[F_DEDUPE_KEY] = none_if_empty(f[F_DEDUPE_KEY]);
    if (read_byte(&c, &byte) < 0) {
        goto fail;
    }
    if (byte == 2) {
        if ((f[F_CONTEXT] = read_json(&c)) == NULL) {
            goto fail;
        }
        if (f[F_CONTEXT] != Py_None && !PyDict_CheckExact(f[F_CONTEXT])) {
            not_plain();
            goto fail;
        }
    } else if (byte == 0) {
        f[F_CONTEXT] = Py_NewRef(Py_None);
    } else {
        not_plain();
        goto fail;
    }
    if ((operations = PyList_New(0)) == NULL || read_array(&c, operations, read_operation) < 0) {
        goto fail;
    }
    if (c.pos != c.len) {
        not_plain();
        goto fail;
    }
    if ((f[F_ANONYMOUS_IDS] = PyList_AsTuple(anonymous)) == NULL ||
        (f[F_OPERATIONS] = PyList_AsTuple(operations)) == NULL ||
        (f[F_EVENT_TIME] = PyLong_FromLongLong(event_time)) == NULL ||
        (f[F_RECEIVED_TIME] = PyLong_FromLongLong(received_time)) == NULL ||
        (f[F_CREATED] = long_or_none(has_created, created)) == NULL ||
        (f[F_EVENT_INDEX] = PyLong_FromLongLong(event_index)) == NULL) {
        goto fail;
    }
    f[F_PREVIOUS_ID] = Py_NewRef(Py_None); /* the first revision has no alias */
    Py_DECREF(anonymous);
    Py_DECREF(operations);
    return named_tuple(EventType, f, N_FIELDS);
fail:
    for (int i = 0; i < N_FIELDS; i++) {
        Py_XDECREF(f[i]);
    }
    Py_XDECREF(anonymous);
    Py_XDECREF(operations);
    return NULL;
}

/* ------------------------------------------------------------------------------ */
/* Writing                                                                         */
/* ------------------------------------------------------------------------------ */

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
    char small[1024];
} Buffer;

static int
reserve(Buffer *b, Py_ssize_t more)
{
    if (b->len + more <= b->cap) {
        return 0;
    }
    Py_ssize_t cap = b->cap * 2;
    while (cap < b->len + more) {
        cap *= 2;
    }
    char *data = b->data == b->small ? PyMem_Malloc((size_t)cap) : PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (b->data == b->small) {
        memcpy(data, b->small, (size_t)b->len);
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int
put(Buffer *b, const char *data, Py_ssize_t size)
{
    if (reserve(b, size) < 0) {
        return -1;
    }
    memcpy(b->data + b->len, data, (size_t)size);
    b->len += size;
    return 0;
}

static int
put_byte(Buffer *b, char byte)
{
    return put(b, &byte, 1);
}

static int
put_long(Buffer *b, long long value)
{
    char out[10];
    int size = 0;
    uint64_t n = ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
    while (n > 0x7F) {
        out[size++] = (char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    out[size++] = (char)n;
    return put(b, out, size);
}

/* An int of the event as a long; anything else (a bool is an int) raises. */
static int
put_int(Buffer *b, PyObject *value)
{
    long long n = PyLong_AsLongLong(value);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    return put_long(b, n);
}

static int
put_string(Buffer *b, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "expected a str");
        return -1;
    }
    Py_ssize_t size;
    const char *data = PyUnicode_AsUTF8AndSize(text, &size);
    if (data == NULL || put_long(b, size) < 0) {
        return -1;
    }
    return put(b, data, size);
}

static int
put_optional_string(Buffer *b, PyObject *text)
{
    if (text == Py_None) {
        return put_byte(b, 0);
    }
    if (put_byte(b, 2) < 0) {
        return -1;
    }
    return put_string(b, text);
}

/* ``value`` as orjson writes it, when it is a plain scalar: a str of printable ASCII
 * with nothing to escape, an int of 64 bits, a bool or None. Returns 1 when written,
 * 0 to leave it to orjson (floats, non-ASCII text, containers), -1 on error. */
static int
put_plain_scalar(Buffer *b, PyObject *value)
{
    char text[24];
    int size;
    if (PyUnicode_CheckExact(value) && PyUnicode_IS_ASCII(value)) {
        const unsigned char *data = PyUnicode_1BYTE_DATA(value);
        Py_ssize_t length = PyUnicode_GET_LENGTH(value);
        for (Py_ssize_t i = 0; i < length; i++) {
            if (data[i] < 0x20 || data[i] > 0x7E || data[i] == '"' || data[i] == '\\') {
                return 0;
            }
        }
        if (put_byte(b, 2) < 0 || put_long(b, length + 2) < 0 || put_byte(b, '"') < 0 ||
            put(b, (const char *)data, length) < 0 || put_byte(b, '"') < 0) {
            return -1;
        }
        return 1;
    }
    if (value == Py_None) {
        size = 4;
        memcpy(text, "null", 4);
    } else if (value == Py_True) {
        size = 4;
        memcpy(text, "true", 4);
    } else if (value == Py_False) {
        size = 5;
        memcpy(text, "false", 5);
    } else if (PyLong_CheckExact(value)) {
        int overflow;
        long long n = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) {
            return 0;
        }
        size = snprintf(text, sizeof(text), "%lld", n);
    } else {
        return 0;
    }
    if (put_byte(b, 2) < 0 || put_long(b, size) < 0 || put(b, text, size) < 0) {
        return -1;
    }
    return 1;
}

/* The present branch of an optional JSON string: ``value`` as orjson writes it. */
static int
put_some_json(Buffer *b, PyObject *value)
{
    int done = put_plain_scalar(b, value);
    if (done != 0) {
        return done < 0 ? -1 : 0;
    }
    PyObject *text = PyObject_CallOneArg(Dumps, value);
    if (text == NULL) {
        return -1;
    }
    int failed = put_byte(b, 2) < 0 || put_long(b, PyBytes_GET_SIZE(text)) < 0 ||
                 put(b, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text)) < 0;
    Py_DECREF(text);
    return failed ? -1 : 0;
}

/* An enum index from ``index`` ({member: index}); a KeyError for anything else. */
static int
put_symbol(Buffer *b, PyObject *index, PyObject *member, long *found)
{
    PyObject *value = PyDict_GetItemWithError(index, member);
    if (value == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetObject(PyExc_KeyError, member);
        }
        return -1;
    }
    *found = PyLong_AsLong(value);
    return put_long(b, *found);
}

/* An Avro array of ``items``, each written by ``put_item``: one block, then the end. */
static int
put_array(Buffer *b, PyObject *items, int (*put_item)(Buffer *, PyObject *))
{
    PyObject *fast = PySequence_Fast(items, "an array field is not a sequence");
    if (fast == NULL) {
        return -1;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    int failed = 0;
    if (count > 0) {
        failed = put_long(b, count) < 0;
        for (Py_ssize_t i = 0; i < count && !failed; i++) {
            failed = put_item(b, PySequence_Fast_GET_ITEM(fast, i)) < 0;
        }
    }
    Py_DECREF(fast);
    return failed || put_byte(b, 0) < 0 ? -1 : 0;
}

static int
put_operation(Buffer *b, PyObject *operation)
{
    if (!PyObject_TypeCheck(operation, (PyTypeObject *)OperationType) || PyTuple_GET_SIZE(operation) != 3) {
        PyErr_SetString(PyExc_TypeError, "an operation is not an Operation");
        return -1;
    }
    long op;
    if (put_symbol(b, OpIndex, PyTuple_GET_ITEM(operation, 0), &op) < 0 ||
        put_optional_string(b, PyTuple_GET_ITEM(operation, 1)) < 0) {
        return -1;
    }
    if (op == OP_UNSET || op == OP_CLEAR_ALL) {
        return put_byte(b, 0);
    }
    return put_some_json(b, PyTuple_GET_ITEM(operation, 2));
}

static int
put_event(Buffer *b, PyObject *event)
{
    PyObject **f = ((PyTupleObject *)event)->ob_item;
    long kind;
    if (put_symbol(b, KindIndex, f[F_KIND], &kind) < 0 || put_string(b, f[F_WORKSPACE_ID]) < 0 ||
        put_optional_string(b, f[F_USER_ID]) < 0 || put_array(b, f[F_ANONYMOUS_IDS], put_string) < 0 ||
        put_string(b, f[F_DIALECT]) < 0 || put_int(b, f[F_EVENT_TIME]) < 0 ||
        put_int(b, f[F_RECEIVED_TIME]) < 0) {
        return -1;
    }
    if (f[F_CREATED] == Py_None) {
        if (put_byte(b, 0) < 0) {
            return -1;
        }
    } else if (put_byte(b, 2) < 0 || put_int(b, f[F_CREATED]) < 0) {
        return -1;
    }
    if (put_string(b, f[F_RESPONSE_ID]) < 0 || put_int(b, f[F_EVENT_INDEX]) < 0 ||
        put_optional_string(b, f[F_DEDUPE_KEY]) < 0) {
        return -1;
    }
    if (f[F_CONTEXT] == Py_None ? put_byte(b, 0) < 0 : put_some_json(b, f[F_CONTEXT]) < 0) {
        return -1;
    }
    return put_array(b, f[F_OPERATIONS], put_operation);
}

static PyObject *
encode_body(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (EventType == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "traitstream.compiled._v1c: bind() was not called");
        return NULL;
    }
    if (nargs != 2 || !PyObject_TypeCheck(args[0], (PyTypeObject *)EventType) ||
        PyTuple_GET_SIZE(args[0]) != N_FIELDS || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "encode_body(event: IdentifyEvent, header: bytes)");
        return NULL;
    }
    Buffer b;
    b.data = b.small;
    b.len = 0;
    b.cap = (Py_ssize_t)sizeof(b.small);
    PyObject *out = NULL;
    if (put(&b, PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1])) == 0 && put_event(&b, args[0]) == 0) {
        out = PyBytes_FromStringAndSize(b.data, b.len);
    }
    if (b.data != b.small) {
        PyMem_Free(b.data);
    }
    return out;
}

/* ------------------------------------------------------------------------------ */

static PyObject *
bind(PyObject *module, PyObject *args)
{
    PyObject *event, *operation, *kinds, *ops, *kind_index, *op_index, *loads, *dumps, *not_plain_type;
    Py_ssize_t max_id_chars;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!OOOn", &PyType_Type, &event, &PyType_Type, &operation,
                          &PyTuple_Type, &kinds, &PyTuple_Type, &ops, &PyDict_Type, &kind_index,
                          &PyDict_Type, &op_index, &loads, &dumps, &not_plain_type, &max_id_chars)) {
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)event, &PyTuple_Type) ||
        !PyType_IsSubtype((PyTypeObject *)operation, &PyTuple_Type) || PyTuple_GET_SIZE(kinds) != 2 ||
        PyTuple_GET_SIZE(ops) != N_OPS || !PyExceptionClass_Check(not_plain_type)) {
        PyErr_SetString(PyExc_ValueError, "bind(): arguments do not match the v1 schema");
        return NULL;
    }
    Py_XSETREF(EventType, Py_NewRef(event));
    Py_XSETREF(OperationType, Py_NewRef(operation));
    Py_XSETREF(Kinds, Py_NewRef(kinds));
    Py_XSETREF(Ops, Py_NewRef(ops));
    Py_XSETREF(KindIndex, Py_NewRef(kind_index));
    Py_XSETREF(OpIndex, Py_NewRef(op_index));
    Py_XSETREF(Loads, Py_NewRef(loads));
    Py_XSETREF(Dumps, Py_NewRef(dumps));
    Py_XSETREF(NotPlain, Py_NewRef(not_plain_type));
    MaxIdChars = max_id_chars;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS, "Bind the Python types and functions the codec builds and calls."},
    {"read_event", (PyCFunction)(void (*)(void))read_event, METH_FASTCALL,
     "read_event(data, start): the event of a plainly valid v1 record, or ValueError."},
    {"encode_body", (PyCFunction)(void (*)(void))encode_body, METH_FASTCALL,
     "encode_body(event, header): header plus the event's v1 Avro body."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "traitstream.compiled._v1c", "The v1 record's hot paths in C (see avro/fast.py).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__v1c(void)
{
    return PyModule_Create(&module);
}
