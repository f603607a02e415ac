/*
 * The merge's per-trait loops in C (merge.py states the rules): the workers run
 * them for every identify they apply and every profile they load and write.
 *
 * - ``apply_operations(profile, operations, time, id)``: the loop of
 *   ``Profile.apply_event``. Sets are applied here; any other operation is handed
 *   to ``profile.apply``, the Python method, in its turn.
 * - ``expand_text(text)`` and ``compact_text(written, once, cleared, sources)``:
 *   a profile's stamps (and its events' sources) between the stored form's JSON
 *   text and the merge's, a list per trait, without the parsed stored form
 *   between. They return what ``merge.expand_stamps`` of the parsed text and
 *   orjson's text of ``merge.compact_stamps`` are, or None for anything not of
 *   the regular shape (text other than exactly as orjson writes it, an index out
 *   of range, the earlier full form, a stamp that is not a list of an int, a str
 *   and an int, and for a written trait maybe a str, a source that is not a
 *   tuple of two str, text that JSON escapes); the Python functions then decide
 *   and raise what they raise.
 *
 * - ``set_operations(pairs)``: ``events.set_operations``, a ``set`` Operation for
 *   each (name, value) of an identify's traits (the edge, once per identify).
 *
 * ``events.py`` binds ``Op.SET`` and ``Operation`` at import. The Python functions
 * stay the reference; tests/unit/test_merge.py compares both, and tests/fuzz feeds
 * both the same inputs under AddressSanitizer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_named_tuple.h"
#include "_shared_names.h"

/* The profile's attribute names, made once at import: the ``...String`` lookups
 * build a str for every call. */
static PyObject *AttrTraits, *AttrWritten, *AttrOnce, *AttrCleared;

/* ---------------------------------------------------------------------------------- */
/* expand_text: the stored form's text, as orjson writes ``merge.compact_stamps``'s
 * result, straight to what ``merge.expand_stamps`` makes of it parsed, without the
 * parsed form's objects between (a dict, and two lists per trait). It reads only
 * that exact text:
 *
 *     {"w":{NAME:[INT,INT],...},"o":{...}[,"c":[INT,INT]],"e":[[INT,STRING],...]
 *      [,"s":[[STRING,STRING] or null,... one per pair]][,"p":{NAME:STRING,...}]}
 *
 * with no space, strings with nothing escaped, integers of at most 18 digits and
 * indexes within "e"; for anything else it returns None, and the caller parses the
 * text and calls ``merge.expand_stamps``. */

typedef struct {
    const char *at, *end;
} Text;

static int
text_skip(Text *t, const char *literal)
{
    size_t size = strlen(literal);
    if ((size_t)(t->end - t->at) < size || memcmp(t->at, literal, size) != 0) {
        return 0;
    }
    t->at += size;
    return 1;
}

/* A JSON integer of at most 18 digits (no leading zero, no -0, no fraction). */
static int
text_int(Text *t, long long *out)
{
    const char *at = t->at;
    int negative = at < t->end && *at == '-';
    at += negative;
    const char *digits = at;
    long long n = 0;
    while (at < t->end && *at >= '0' && *at <= '9' && at - digits < 18) {
        n = n * 10 + (*at++ - '0');
    }
    Py_ssize_t count = at - digits;
    if (count == 0 || (digits[0] == '0' && (count > 1 || negative))) {
        return 0;
    }
    if (at < t->end && ((*at >= '0' && *at <= '9') || *at == '.' || *at == 'e' || *at == 'E')) {
        return 0;
    }
    *out = negative ? -n : n;
    t->at = at;
    return 1;
}

/* A JSON string with nothing escaped; NULL without an error for any other (an
 * escape, a control character, bytes that are not UTF-8). ``name``: a trait name,
 * shared (see _shared_names.h). */
static PyObject *
text_string(Text *t, int name)
{
    if (t->at >= t->end || *t->at != '"') {
        return NULL;
    }
    const char *start = t->at + 1, *at = start;
    while (at < t->end && *at != '"') {
        if ((unsigned char)*at < 0x20 || *at == '\\') {
            return NULL;
        }
        at++;
    }
    if (at >= t->end) {
        return NULL;
    }
    PyObject *text = name ? shared_name(start, at - start) : PyUnicode_DecodeUTF8(start, at - start, NULL);
    if (text == NULL) {
        PyErr_Clear(); /* orjson's to refuse, on the caller's path */
        return NULL;
    }
    t->at = at + 1;
    return text;
}

typedef struct {
    PyObject *name;
    long long index, position;
} Ref;

typedef struct {
    Ref *refs;
    Py_ssize_t count, room;
} Refs;

static void
refs_free(Refs *r)
{
    for (Py_ssize_t i = 0; i < r->count; i++) {
        Py_DECREF(r->refs[i].name);
    }
    PyMem_Free(r->refs);
}

/* {NAME:[INT,INT],...} into ``out`` (which owns the names): 1 when read, 0 when
 * not of that shape, -1 on an error. */
static int
text_refs(Text *t, Refs *out)
{
    if (!text_skip(t, "{")) {
        return 0;
    }
    if (text_skip(t, "}")) {
        return 1;
    }
    for (;;) {
        PyObject *name = text_string(t, 1);
        Ref ref = {name, 0, 0};
        if (name == NULL) {
            return 0;
        }
        if (!text_skip(t, ":[") || !text_int(t, &ref.index) || !text_skip(t, ",") ||
            !text_int(t, &ref.position) || !text_skip(t, "]")) {
            Py_DECREF(name);
            return 0;
        }
        if (out->count == out->room) {
            Py_ssize_t room = out->room ? 2 * out->room : 16;
            Ref *grown = PyMem_Realloc(out->refs, (size_t)room * sizeof(Ref));
            if (grown == NULL) {
                Py_DECREF(name);
                PyErr_NoMemory();
                return -1;
            }
            out->refs = grown;
            out->room = room;
        }
        out->refs[out->count++] = ref;
        if (text_skip(t, "}")) {
            return 1;
        }
        if (!text_skip(t, ",")) {
            return 0;
        }
    }
}

/* [[INT,STRING],...] as two lists, the times and the ids; 1, 0 or -1 as above. */
static int
text_pairs(Text *t, PyObject *times, PyObject *ids)
{
    if (!text_skip(t, "[")) {
        return 0;
    }
    if (text_skip(t, "]")) {
        return 1;
    }
    for (;;) {
        long long time;
        if (!text_skip(t, "[") || !text_int(t, &time) || !text_skip(t, ",")) {
            return 0;
        }
        PyObject *id = text_string(t, 0);
        if (id == NULL) {
            return 0;
        }
        PyObject *number = PyLong_FromLongLong(time);
        int failed = number == NULL || PyList_Append(times, number) < 0 || PyList_Append(ids, id) < 0;
        Py_XDECREF(number);
        Py_DECREF(id);
        if (failed) {
            return -1;
        }
        if (!text_skip(t, "]")) {
            return 0;
        }
        if (text_skip(t, "]")) {
            return 1;
        }
        if (!text_skip(t, ",")) {
            return 0;
        }
    }
}

/* ``[times[index], ids[index], position]``, and ``op`` after them when not NULL;
 * NULL without an error for an index outside the pairs. */
static PyObject *
text_stamp(PyObject *times, PyObject *ids, long long index, long long position, PyObject *op)
{
    if (index < 0 || index >= PyList_GET_SIZE(times)) {
        return NULL;
    }
    PyObject *number = PyLong_FromLongLong(position);
    PyObject *stamp = number == NULL ? NULL : PyList_New(op == NULL ? 3 : 4);
    if (stamp == NULL) {
        Py_XDECREF(number);
        return NULL;
    }
    PyList_SET_ITEM(stamp, 0, Py_NewRef(PyList_GET_ITEM(times, index)));
    PyList_SET_ITEM(stamp, 1, Py_NewRef(PyList_GET_ITEM(ids, index)));
    PyList_SET_ITEM(stamp, 2, number);
    if (op != NULL) {
        PyList_SET_ITEM(stamp, 3, Py_NewRef(op));
    }
    return stamp;
}

/* "s": [[STRING,STRING] or null, ...], one per pair, into ``sources`` (id ->
 * (source, message id)); 1, 0 or -1 as above. */
static int
text_sources(Text *t, PyObject *ids, PyObject *sources)
{
    if (!text_skip(t, "[")) {
        return 0;
    }
    Py_ssize_t count = PyList_GET_SIZE(ids);
    for (Py_ssize_t i = 0; i < count; i++) {
        if (i > 0 && !text_skip(t, ",")) {
            return 0;
        }
        if (text_skip(t, "null")) {
            continue;
        }
        if (!text_skip(t, "[")) {
            return 0;
        }
        PyObject *source = text_string(t, 1), *message_id = NULL, *pair = NULL;
        int done = 0;
        if (source != NULL && text_skip(t, ",") && (message_id = text_string(t, 0)) != NULL &&
            text_skip(t, "]")) {
            pair = PyTuple_Pack(2, source, message_id);
            done = pair == NULL || PyDict_SetItem(sources, PyList_GET_ITEM(ids, i), pair) < 0 ? -1 : 1;
        }
        Py_XDECREF(source);
        Py_XDECREF(message_id);
        Py_XDECREF(pair);
        if (done <= 0) {
            return done;
        }
    }
    return text_skip(t, "]");
}

/* "p": {NAME:STRING,...} into ``ops``; 1, 0 or -1 as above. */
static int
text_ops(Text *t, PyObject *ops)
{
    if (!text_skip(t, "{")) {
        return 0;
    }
    if (text_skip(t, "}")) {
        return 1;
    }
    for (;;) {
        PyObject *name = text_string(t, 1), *op = NULL;
        int done = 0;
        if (name != NULL && text_skip(t, ":") && (op = text_string(t, 1)) != NULL) {
            done = PyDict_SetItem(ops, name, op) < 0 ? -1 : 1;
        }
        Py_XDECREF(name);
        Py_XDECREF(op);
        if (done <= 0) {
            return done;
        }
        if (text_skip(t, "}")) {
            return 1;
        }
        if (!text_skip(t, ",")) {
            return 0;
        }
    }
}

/* {name: stamp} of ``refs``, each with its operation's name from ``ops`` when it is
 * there; NULL with an error or without one (an index outside). */
static PyObject *
text_stamps(Refs *refs, PyObject *times, PyObject *ids, PyObject *ops)
{
    PyObject *out = PyDict_New();
    for (Py_ssize_t i = 0; out != NULL && i < refs->count; i++) {
        Ref *ref = &refs->refs[i];
        PyObject *op = NULL;
        if (ops != NULL && (op = PyDict_GetItemWithError(ops, ref->name)) == NULL && PyErr_Occurred()) {
            Py_CLEAR(out);
            break;
        }
        PyObject *stamp = text_stamp(times, ids, ref->index, ref->position, op);
        if (stamp == NULL || PyDict_SetItem(out, refs->refs[i].name, stamp) < 0) {
            Py_XDECREF(stamp);
            Py_CLEAR(out);
        } else {
            Py_DECREF(stamp);
        }
    }
    return out;
}

static PyObject *
expand_text(PyObject *module, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t size;
    const char *data = PyUnicode_AsUTF8AndSize(text, &size);
    if (data == NULL) {
        PyErr_Clear(); /* a lone surrogate: orjson's to refuse */
        Py_RETURN_NONE;
    }
    Text t = {data, data + size};
    Refs written = {NULL, 0, 0}, once = {NULL, 0, 0};
    long long clear[2] = {0, 0};
    int has_clear = 0;
    PyObject *times = PyList_New(0), *ids = PyList_New(0), *sources = PyDict_New(), *ops = NULL;
    PyObject *w = NULL, *o = NULL, *c = NULL, *out = NULL;
    if (times == NULL || ids == NULL || sources == NULL) {
        goto done;
    }
    if (!text_skip(&t, "{\"w\":") || text_refs(&t, &written) <= 0 || !text_skip(&t, ",\"o\":") ||
        text_refs(&t, &once) <= 0) {
        goto done;
    }
    if (text_skip(&t, ",\"c\":[")) {
        if (!text_int(&t, &clear[0]) || !text_skip(&t, ",") || !text_int(&t, &clear[1]) || !text_skip(&t, "]")) {
            goto done;
        }
        has_clear = 1;
    }
    if (!text_skip(&t, ",\"e\":") || text_pairs(&t, times, ids) <= 0) {
        goto done;
    }
    if (text_skip(&t, ",\"s\":") && text_sources(&t, ids, sources) <= 0) {
        goto done;
    }
    if (text_skip(&t, ",\"p\":") && ((ops = PyDict_New()) == NULL || text_ops(&t, ops) <= 0)) {
        goto done;
    }
    if (!text_skip(&t, "}") || t.at != t.end) {
        goto done;
    }
    if ((w = text_stamps(&written, times, ids, ops)) == NULL || (o = text_stamps(&once, times, ids, NULL)) == NULL) {
        goto done;
    }
    c = has_clear ? text_stamp(times, ids, clear[0], clear[1], NULL) : Py_NewRef(Py_None);
    if (c != NULL) {
        out = PyTuple_Pack(4, w, o, c, sources);
    }
done:
    refs_free(&written);
    refs_free(&once);
    Py_XDECREF(times);
    Py_XDECREF(ids);
    Py_XDECREF(sources);
    Py_XDECREF(ops);
    Py_XDECREF(w);
    Py_XDECREF(o);
    Py_XDECREF(c);
    if (out == NULL && !PyErr_Occurred()) {
        Py_RETURN_NONE; /* not the regular text: the caller parses it */
    }
    return out;
}

/* ---------------------------------------------------------------------------------- */

typedef struct {
    PyObject *pairs; /* {(event time, event id): index}, in first-seen order */
    PyObject *last_time, *last_id;
    Py_ssize_t last_index;
} Pairs;

/* The index of the pair (time, id) in ``p``, a new one when it is not there yet;
 * -1 on an error. */
static Py_ssize_t
pair_index(Pairs *p, PyObject *time, PyObject *id)
{
    if (p->last_time != NULL) {
        /* One identify's stamps share their pair and mostly come one after another. */
        int equal = PyObject_RichCompareBool(time, p->last_time, Py_EQ);
        if (equal < 0 || (equal && (equal = PyObject_RichCompareBool(id, p->last_id, Py_EQ)) < 0)) {
            return -1;
        }
        if (equal) {
            return p->last_index;
        }
    }
    PyObject *key = PyTuple_Pack(2, time, id);
    if (key == NULL) {
        return -1;
    }
    Py_ssize_t index;
    PyObject *known = PyDict_GetItemWithError(p->pairs, key);
    if (known != NULL) {
        index = PyLong_AsSsize_t(known);
    } else if (PyErr_Occurred()) {
        index = -1;
    } else {
        index = PyDict_GET_SIZE(p->pairs);
        PyObject *value = PyLong_FromSsize_t(index);
        if (value == NULL || PyDict_SetItem(p->pairs, key, value) < 0) {
            index = -1;
        }
        Py_XDECREF(value);
    }
    Py_DECREF(key);
    if (index >= 0) {
        p->last_time = time;
        p->last_id = id;
        p->last_index = index;
    }
    return index;
}

/* ---------------------------------------------------------------------------------- */

static PyObject *Set;           /* Op.SET, set by bind() */
static PyObject *OperationType; /* traitstream.events.Operation, set by bind() */

/* The profile's attribute ``name``, which must be a dict (borrowed from ``slot``). */
static int
dict_attribute(PyObject *profile, PyObject *name, PyObject **slot)
{
    PyObject *value = PyObject_GetAttr(profile, name);
    if (value == NULL) {
        return -1;
    }
    Py_DECREF(value); /* the profile keeps it alive while this runs */
    if (!PyDict_CheckExact(value)) {
        PyErr_Format(PyExc_TypeError, "profile.%U is not a dict", name);
        return -1;
    }
    *slot = value;
    return 0;
}

typedef struct {
    PyObject *traits, *written, *once, *cleared; /* borrowed from the profile */
} State;

static int
read_state(PyObject *profile, State *state)
{
    if (dict_attribute(profile, AttrTraits, &state->traits) < 0 ||
        dict_attribute(profile, AttrWritten, &state->written) < 0 ||
        dict_attribute(profile, AttrOnce, &state->once) < 0) {
        return -1;
    }
    PyObject *cleared = PyObject_GetAttr(profile, AttrCleared);
    if (cleared == NULL) {
        return -1;
    }
    Py_DECREF(cleared);
    state->cleared = cleared;
    return 0;
}

/* ``Profile.set_value``: the newer write wins, by stamp. */
static int
set_value(State *state, PyObject *trait, PyObject *value, PyObject *stamp)
{
    PyObject *previous = PyDict_GetItemWithError(state->written, trait);
    if (previous == NULL && PyErr_Occurred()) {
        return -1;
    }
    if (state->cleared != Py_None) {
        int older = previous == NULL ? 1 : PyObject_RichCompareBool(previous, state->cleared, Py_LT);
        if (older < 0) {
            return -1;
        }
        if (older) {
            previous = state->cleared;
        }
    }
    if (previous != NULL) {
        int newer = PyObject_RichCompareBool(stamp, previous, Py_GT);
        if (newer <= 0) {
            return newer;
        }
    }
    if (PyDict_SetItem(state->traits, trait, value) < 0 || PyDict_SetItem(state->written, trait, stamp) < 0) {
        return -1;
    }
    if (PyDict_GET_SIZE(state->once) > 0) { /* once.pop(trait, None) */
        int has = PyDict_Contains(state->once, trait);
        if (has < 0 || (has && PyDict_DelItem(state->once, trait) < 0)) {
            return -1;
        }
    }
    return 0;
}

static PyObject *
apply_operations(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (Set == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "traitstream.compiled._merge: bind() was not called");
        return NULL;
    }
    if (nargs != 4 || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "apply_operations(profile, operations: tuple, time, id)");
        return NULL;
    }
    PyObject *profile = args[0], *operations = args[1], *time = args[2], *id = args[3];
    State state;
    if (read_state(profile, &state) < 0) {
        return NULL;
    }
    for (Py_ssize_t index = 0; index < PyTuple_GET_SIZE(operations); index++) {
        PyObject *operation = PyTuple_GET_ITEM(operations, index);
        if (!PyObject_TypeCheck(operation, (PyTypeObject *)OperationType) || PyTuple_GET_SIZE(operation) != 3) {
            PyErr_SetString(PyExc_TypeError, "an operation is not an Operation");
            return NULL;
        }
        PyObject *stamp = PyList_New(3);
        PyObject *position = PyLong_FromSsize_t(index);
        if (stamp == NULL || position == NULL) {
            Py_XDECREF(stamp);
            Py_XDECREF(position);
            return NULL;
        }
        PyList_SET_ITEM(stamp, 0, Py_NewRef(time));
        PyList_SET_ITEM(stamp, 1, Py_NewRef(id));
        PyList_SET_ITEM(stamp, 2, position);
        PyObject *trait = PyTuple_GET_ITEM(operation, 1);
        int failed;
        if (PyTuple_GET_ITEM(operation, 0) == Set && trait != Py_None) {
            failed = set_value(&state, trait, PyTuple_GET_ITEM(operation, 2), stamp) < 0;
        } else {
            /* Anything else in Python, which may replace the profile's dicts. */
            PyObject *done = PyObject_CallMethod(profile, "apply", "OO", operation, stamp);
            failed = done == NULL || read_state(profile, &state) < 0;
            Py_XDECREF(done);
        }
        Py_DECREF(stamp);
        if (failed) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
set_operations(PyObject *module, PyObject *pairs)
{
    if (Set == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "traitstream.compiled._merge: bind() was not called");
        return NULL;
    }
    PyObject *iterator = PyObject_GetIter(pairs);
    if (iterator == NULL) {
        return NULL;
    }
    PyObject *operations = PyList_New(0);
    PyObject *pair;
    while (operations != NULL && (pair = PyIter_Next(iterator)) != NULL) {
        PyObject *name = NULL, *value = NULL;
        if (PyTuple_CheckExact(pair) && PyTuple_GET_SIZE(pair) == 2) {
            name = Py_NewRef(PyTuple_GET_ITEM(pair, 0));
            value = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
        } else {
            PyObject *items = PySequence_Fast(pair, "each trait must be a (name, value) pair");
            if (items != NULL && PySequence_Fast_GET_SIZE(items) == 2) {
                name = Py_NewRef(PySequence_Fast_GET_ITEM(items, 0));
                value = Py_NewRef(PySequence_Fast_GET_ITEM(items, 1));
            } else if (items != NULL) {
                PyErr_Format(PyExc_ValueError, "each trait must be a (name, value) pair, got %zd items",
                             PySequence_Fast_GET_SIZE(items));
            }
            Py_XDECREF(items);
        }
        Py_DECREF(pair);
        PyObject *operation = NULL;
        if (name != NULL) {
            PyObject *items[3] = {Py_NewRef(Set), name, value};
            operation = named_tuple(OperationType, items, 3);
        }
        if (operation == NULL || PyList_Append(operations, operation) < 0) {
            Py_XDECREF(operation);
            Py_CLEAR(operations);
            break;
        }
        Py_DECREF(operation);
    }
    Py_DECREF(iterator);
    if (operations == NULL || PyErr_Occurred()) {
        Py_XDECREF(operations);
        return NULL;
    }
    PyObject *result = PyList_AsTuple(operations);
    Py_DECREF(operations);
    return result;
}

/* ---------------------------------------------------------------------------------- */
/* compact_text: ``orjson.dumps(merge.compact_stamps(...)).decode()`` written
 * directly, without the stored form's dict and lists. Only for stamps of the
 * regular shape: a list of an int, a str and an int (and for a written trait
 * maybe the operation's name, a str), each int within 64 bits; sources that are
 * tuples of two str; and names, ids, sources and operations that JSON writes as
 * they are (no quote, backslash or control character); None otherwise. */

typedef struct {
    char *data;
    Py_ssize_t size, room;
} Out;

static int
out_grow(Out *o, Py_ssize_t size);

/* ``data[:size]`` at the end; -1 on an error. */
static inline int
out_put(Out *o, const char *data, Py_ssize_t size)
{
    if (o->size + size > o->room && out_grow(o, size) < 0) {
        return -1;
    }
    if (size == 1) {
        o->data[o->size++] = data[0]; /* most puts are a bracket or a comma */
    } else {
        memcpy(o->data + o->size, data, (size_t)size);
        o->size += size;
    }
    return 0;
}

/* Room for ``size`` more bytes; -1 on an error. */
static int
out_grow(Out *o, Py_ssize_t size)
{
    Py_ssize_t room = o->room ? o->room : 512;
    while (room < o->size + size) {
        room *= 2;
    }
    char *grown = PyMem_Realloc(o->data, (size_t)room);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    o->data = grown;
    o->room = room;
    return 0;
}

static int
out_literal(Out *o, const char *text)
{
    return out_put(o, text, (Py_ssize_t)strlen(text));
}

/* The decimal digits of ``value`` (snprintf costs ten times as much). */
static int
out_long(Out *o, long long value)
{
    char digits[24];
    char *end = digits + sizeof digits, *at = end;
    unsigned long long n = value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    do {
        *--at = (char)('0' + n % 10);
        n /= 10;
    } while (n != 0);
    if (value < 0) {
        *--at = '-';
    }
    return out_put(o, at, end - at);
}

/* 1 when written, 0 when not an int within 64 bits, -1 on an error. */
static int
out_int(Out *o, PyObject *number)
{
    if (!PyLong_CheckExact(number)) {
        return 0;
    }
    int overflow;
    long long value = PyLong_AsLongLongAndOverflow(number, &overflow);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow) {
        return 0;
    }
    return out_long(o, value) < 0 ? -1 : 1;
}

/* 1 when written as a JSON string, 0 when JSON would escape some of it, -1 on an
 * error. */
static int
out_string(Out *o, PyObject *text)
{
    if (!PyUnicode_CheckExact(text)) {
        return 0;
    }
    Py_ssize_t size;
    const char *data = PyUnicode_AsUTF8AndSize(text, &size);
    if (data == NULL) {
        PyErr_Clear(); /* a lone surrogate: orjson's to refuse */
        return 0;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        unsigned char ch = (unsigned char)data[i];
        if (ch < 0x20 || ch == '"' || ch == '\\') {
            return 0;
        }
    }
    if (out_put(o, "\"", 1) < 0 || out_put(o, data, size) < 0 || out_put(o, "\"", 1) < 0) {
        return -1;
    }
    return 1;
}

/* ``[INDEX,POSITION]`` of a stamp; 1, 0 or -1 as above. A stamp of four (the
 * operation's name last) only where ``ops`` collects (name, op) pairs. */
static int
out_reference(Out *o, Pairs *p, PyObject *stamp, PyObject *ops, PyObject *name)
{
    Py_ssize_t size = PyList_CheckExact(stamp) ? PyList_GET_SIZE(stamp) : 0;
    if (size == 4 && ops != NULL) {
        PyObject *named = PyTuple_Pack(2, name, PyList_GET_ITEM(stamp, 3));
        int failed = named == NULL || PyList_Append(ops, named) < 0;
        Py_XDECREF(named);
        if (failed) {
            return -1;
        }
    } else if (size != 3) {
        return 0;
    }
    if (!PyLong_CheckExact(PyList_GET_ITEM(stamp, 0)) || !PyUnicode_CheckExact(PyList_GET_ITEM(stamp, 1))) {
        return 0;
    }
    Py_ssize_t index = pair_index(p, PyList_GET_ITEM(stamp, 0), PyList_GET_ITEM(stamp, 1));
    if (index < 0) {
        return -1;
    }
    if (out_put(o, "[", 1) < 0 || out_long(o, index) < 0 || out_put(o, ",", 1) < 0) {
        return -1;
    }
    int done = out_int(o, PyList_GET_ITEM(stamp, 2));
    if (done <= 0) {
        return done;
    }
    return out_put(o, "]", 1) < 0 ? -1 : 1;
}

/* ``{NAME:[INDEX,POSITION],...}`` of a dict of stamps; 1, 0 or -1 as above. */
static int
out_references(Out *o, Pairs *p, PyObject *stamps, PyObject *ops)
{
    if (out_put(o, "{", 1) < 0) {
        return -1;
    }
    Py_ssize_t at = 0;
    PyObject *name, *stamp;
    int first = 1, done;
    while (PyDict_Next(stamps, &at, &name, &stamp)) {
        if ((!first && out_put(o, ",", 1) < 0)) {
            return -1;
        }
        first = 0;
        if ((done = out_string(o, name)) <= 0) {
            return done;
        }
        if (out_put(o, ":", 1) < 0) {
            return -1;
        }
        if ((done = out_reference(o, p, stamp, ops, name)) <= 0) {
            return done;
        }
    }
    return out_put(o, "}", 1) < 0 ? -1 : 1;
}

/* ``,"s":[[SOURCE,MESSAGE_ID] or null,...]``, one per pair, when ``sources`` has
 * any pair's event; 1, 0 or -1 as above. */
static int
out_sources(Out *o, Pairs *p, PyObject *sources)
{
    Py_ssize_t at = 0;
    PyObject *key, *value;
    int any = 0;
    while (!any && PyDict_Next(p->pairs, &at, &key, &value)) {
        if ((any = PyDict_Contains(sources, PyTuple_GET_ITEM(key, 1))) < 0) {
            return -1;
        }
    }
    if (!any) {
        return 1;
    }
    if (out_literal(o, ",\"s\":[") < 0) {
        return -1;
    }
    at = 0;
    int first = 1, done;
    while (PyDict_Next(p->pairs, &at, &key, &value)) {
        if (!first && out_put(o, ",", 1) < 0) {
            return -1;
        }
        first = 0;
        PyObject *source = PyDict_GetItemWithError(sources, PyTuple_GET_ITEM(key, 1));
        if (source == NULL) {
            if (PyErr_Occurred() || out_literal(o, "null") < 0) {
                return -1;
            }
            continue;
        }
        if (!PyTuple_CheckExact(source) || PyTuple_GET_SIZE(source) != 2) {
            return 0;
        }
        if (out_put(o, "[", 1) < 0) {
            return -1;
        }
        if ((done = out_string(o, PyTuple_GET_ITEM(source, 0))) <= 0) {
            return done;
        }
        if (out_put(o, ",", 1) < 0) {
            return -1;
        }
        if ((done = out_string(o, PyTuple_GET_ITEM(source, 1))) <= 0) {
            return done;
        }
        if (out_put(o, "]", 1) < 0) {
            return -1;
        }
    }
    return out_put(o, "]", 1) < 0 ? -1 : 1;
}

/* ``,"p":{NAME:OP,...}`` of the (name, op) pairs in ``ops``, when there are any;
 * 1, 0 or -1 as above. */
static int
out_ops(Out *o, PyObject *ops)
{
    if (PyList_GET_SIZE(ops) == 0) {
        return 1;
    }
    if (out_literal(o, ",\"p\":{") < 0) {
        return -1;
    }
    int done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(ops); i++) {
        PyObject *named = PyList_GET_ITEM(ops, i);
        if (i > 0 && out_put(o, ",", 1) < 0) {
            return -1;
        }
        if ((done = out_string(o, PyTuple_GET_ITEM(named, 0))) <= 0) {
            return done;
        }
        if (out_put(o, ":", 1) < 0) {
            return -1;
        }
        if ((done = out_string(o, PyTuple_GET_ITEM(named, 1))) <= 0) {
            return done;
        }
    }
    return out_put(o, "}", 1) < 0 ? -1 : 1;
}

static PyObject *
compact_text(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyDict_CheckExact(args[0]) || !PyDict_CheckExact(args[1]) || !PyDict_CheckExact(args[3])) {
        Py_RETURN_NONE;
    }
    Pairs p = {PyDict_New(), NULL, NULL, 0};
    Out o = {NULL, 0, 0};
    PyObject *text = NULL, *ops = PyList_New(0);
    int done = 0;
    if (p.pairs == NULL || ops == NULL) {
        goto end;
    }
    if (out_literal(&o, "{\"w\":") < 0 || (done = out_references(&o, &p, args[0], ops)) <= 0 ||
        out_literal(&o, ",\"o\":") < 0 || (done = out_references(&o, &p, args[1], NULL)) <= 0) {
        goto end;
    }
    if (args[2] != Py_None &&
        (out_literal(&o, ",\"c\":") < 0 || (done = out_reference(&o, &p, args[2], NULL, NULL)) <= 0)) {
        goto end;
    }
    if (out_literal(&o, ",\"e\":[") < 0) {
        goto end;
    }
    Py_ssize_t at = 0;
    PyObject *key, *value;
    int first = 1;
    while (PyDict_Next(p.pairs, &at, &key, &value)) {
        if ((!first && out_put(&o, ",", 1) < 0) || out_put(&o, "[", 1) < 0 ||
            (done = out_int(&o, PyTuple_GET_ITEM(key, 0))) <= 0 || out_put(&o, ",", 1) < 0 ||
            (done = out_string(&o, PyTuple_GET_ITEM(key, 1))) <= 0 || out_put(&o, "]", 1) < 0) {
            goto end;
        }
        first = 0;
    }
    if (out_put(&o, "]", 1) < 0 || (done = out_sources(&o, &p, args[3])) <= 0 || (done = out_ops(&o, ops)) <= 0 ||
        out_put(&o, "}", 1) < 0) {
        goto end;
    }
    text = PyUnicode_DecodeUTF8(o.data, o.size, NULL);
end:
    PyMem_Free(o.data);
    Py_XDECREF(p.pairs);
    Py_XDECREF(ops);
    if (text == NULL && !PyErr_Occurred()) {
        Py_RETURN_NONE; /* not the regular shape: Python writes it */
    }
    return text;
}

static PyObject *
bind(PyObject *module, PyObject *args)
{
    PyObject *set, *operation;
    if (!PyArg_ParseTuple(args, "OO!", &set, &PyType_Type, &operation)) {
        return NULL;
    }
    Py_XSETREF(Set, Py_NewRef(set));
    Py_XSETREF(OperationType, Py_NewRef(operation));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS, "bind(Op.SET, Operation)"},
    {"apply_operations", (PyCFunction)(void (*)(void))apply_operations, METH_FASTCALL,
     "apply_operations(profile, operations, time, id): Profile.apply_event's loop."},
    {"set_operations", set_operations, METH_O, "set_operations(pairs): events.set_operations."},
    {"expand_text", expand_text, METH_O,
     "expand_text(text): expand_stamps(orjson.loads(text)) for the regular stored text, else None."},
    {"compact_text", (PyCFunction)(void (*)(void))compact_text, METH_FASTCALL,
     "compact_text(written, once, cleared, sources): orjson.dumps(compact_stamps(...)).decode(), or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "traitstream.compiled._merge", "The merge's per-trait loops in C (see merge.py).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__merge(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {{&AttrTraits, "traits"}, {&AttrWritten, "written"}, {&AttrOnce, "once"}, {&AttrCleared, "cleared"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL) {
            return NULL;
        }
    }
    return PyModule_Create(&module);
}
