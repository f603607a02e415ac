/*
 * The dialects' per-identify loops in C: the edge runs them for every identify it
 * parses, over every trait and every context value.
 *
 * - ``plainly_fine(value, limit)``: True when ``common.check_value`` would pass
 *   ``value`` (no string or key holds U+0000, nothing is nested more than ``limit``
 *   deep), False when it might not or when ``value`` holds anything but JSON's
 *   own types; the Python walk then decides and names what is wrong.
 * - ``check_typed(traits, where, types, string_check)``: the loop of
 *   ``traits.check_typed``. A string given to a trait whose check is
 *   ``string_check`` passes here, and so does each such field of an object trait
 *   whose check is a ``traits.ObjectCheck`` (once ``bind`` has named that class);
 *   every other typed trait or field is handed to its Python check, which raises
 *   what it raises.
 *
 * - ``plainly_small(value, limit)``: True when the compact JSON of ``value`` is
 *   certainly at most ``limit`` bytes, from a bound summed in one walk that
 *   serializes nothing (a string's character is at most 6 bytes, ``\u001f``);
 *   False when the bound passes ``limit`` or ``value`` holds what the bound does
 *   not cover, and ``common.json_size`` then measures it.
 *
 * The Python functions stay the reference; tests/unit/test_dialect_checks.py
 * compares both on random values (``plainly_small`` against ``json_size``).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* 1 when ``text`` holds U+0000, 0 when not, -1 on error. */
static int
has_nul(PyObject *text)
{
    Py_ssize_t at = PyUnicode_FindChar(text, 0, 0, PyUnicode_GET_LENGTH(text), 1);
    return at == -2 ? -1 : at >= 0;
}

/* 1: fine; 0: not proven; -1: error. ``depth`` is the depth of ``value`` if it is an
 * object or array (the outermost is 1). Recursion stops at ``limit``, so it is bounded. */
static int
plain(PyObject *value, Py_ssize_t depth, Py_ssize_t limit)
{
    if (PyUnicode_CheckExact(value)) {
        int nul = has_nul(value);
        return nul < 0 ? -1 : !nul;
    }
    if (PyDict_CheckExact(value)) {
        if (depth > limit) {
            return 0;
        }
        Py_ssize_t pos = 0;
        PyObject *key, *item;
        while (PyDict_Next(value, &pos, &key, &item)) {
            if (!PyUnicode_CheckExact(key)) {
                return 0;
            }
            int nul = has_nul(key);
            if (nul != 0) {
                return nul < 0 ? -1 : 0;
            }
            int fine = plain(item, depth + 1, limit);
            if (fine != 1) {
                return fine;
            }
        }
        return 1;
    }
    if (PyList_CheckExact(value)) {
        if (depth > limit) {
            return 0;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++) {
            int fine = plain(PyList_GET_ITEM(value, i), depth + 1, limit);
            if (fine != 1) {
                return fine;
            }
        }
        return 1;
    }
    return value == Py_None || PyBool_Check(value) || PyLong_CheckExact(value) || PyFloat_CheckExact(value);
}

/* The ``limit`` of a ``(value, limit)`` call into ``*limit``: 0, or -1 with the error. */
static int
limit_of(const char *name, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t *limit)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s(value, limit) takes two arguments", name);
        return -1;
    }
    *limit = PyLong_AsSsize_t(args[1]);
    return *limit == -1 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *
plainly_fine(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t limit;
    if (limit_of("plainly_fine", args, nargs, &limit) < 0) {
        return NULL;
    }
    int fine = plain(args[0], 1, limit);
    if (fine < 0) {
        return NULL;
    }
    return PyBool_FromLong(fine);
}

/* Deeper values are measured instead: well inside orjson's 254 levels, and a
 * bound on this walk's recursion. */
#define SIZE_DEPTH 64

/* An upper bound of the compact JSON of ``value`` (orjson's), or -1 when it passes
 * ``budget`` or cannot be bounded here. Never fails: nothing is allocated. */
static Py_ssize_t
size_bound(PyObject *value, Py_ssize_t budget, int depth)
{
    Py_ssize_t scalar = -1;
    if (PyUnicode_CheckExact(value)) {
        scalar = 6 * PyUnicode_GET_LENGTH(value) + 2;
    }
    else if (value == Py_None || PyBool_Check(value)) {
        scalar = 5;
    }
    else if (PyFloat_CheckExact(value)) {
        scalar = 32; /* the longest shortest form takes 24: -2.2250738585072014e-308 */
    }
    else if (PyLong_CheckExact(value)) {
        int overflow;
        (void)PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow != 0) {
            return -1; /* past 64 bits orjson refuses it: measured another way */
        }
        scalar = 20;
    }
    if (scalar >= 0) {
        return scalar <= budget ? scalar : -1;
    }
    int is_dict = PyDict_CheckExact(value);
    if ((!is_dict && !PyList_CheckExact(value)) || depth > SIZE_DEPTH) {
        return -1;
    }
    Py_ssize_t total = 2; /* the brackets; each member adds at most one comma more */
    if (is_dict) {
        Py_ssize_t pos = 0;
        PyObject *key, *item;
        while (PyDict_Next(value, &pos, &key, &item)) {
            if (!PyUnicode_CheckExact(key)) {
                return -1;
            }
            Py_ssize_t k = size_bound(key, budget - total, depth + 1);
            Py_ssize_t v = k < 0 ? -1 : size_bound(item, budget - total - k - 2, depth + 1);
            if (v < 0) {
                return -1;
            }
            total += k + v + 2; /* the colon and a comma */
        }
    }
    else {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++) {
            Py_ssize_t v = size_bound(PyList_GET_ITEM(value, i), budget - total - 1, depth + 1);
            if (v < 0) {
                return -1;
            }
            total += v + 1;
        }
    }
    return total <= budget ? total : -1;
}

static PyObject *
plainly_small(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t limit;
    if (limit_of("plainly_small", args, nargs, &limit) < 0) {
        return NULL;
    }
    return PyBool_FromLong(limit >= 0 && size_bound(args[0], limit, 1) >= 0);
}

/* traits.ObjectCheck, set by bind(): its fields are checked here, the string ones
 * without a call. */
static PyTypeObject *ObjectCheckType;
static PyObject *FieldsName;

/* ``inner(value, "where.name[.key]")``: a check in Python, named as the Python loop
 * names it (``key`` may be NULL). 0, or -1 with its error. */
static int
call_check(PyObject *inner, PyObject *value, PyObject *where, PyObject *name, PyObject *key)
{
    /* The check is Python code: hold what it is given, whatever it does. */
    Py_INCREF(inner);
    Py_INCREF(value);
    Py_INCREF(name);
    Py_XINCREF(key);
    PyObject *field = key == NULL ? PyUnicode_FromFormat("%S.%S", where, name)
                                  : PyUnicode_FromFormat("%S.%S.%S", where, name, key);
    PyObject *done = field == NULL ? NULL : PyObject_CallFunctionObjArgs(inner, value, field, NULL);
    Py_XDECREF(field);
    Py_DECREF(inner);
    Py_DECREF(value);
    Py_DECREF(name);
    Py_XDECREF(key);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* ``ObjectCheck.__call__`` for a dict ``value``: each field of ``check.fields`` that
 * is present and not null, by its own check. 0, or -1 with the error. */
static int
check_fields(PyObject *value, PyObject *check, PyObject *where, PyObject *name, PyObject *string_check)
{
    PyObject *fields = PyObject_GetAttr(check, FieldsName);
    if (fields == NULL) {
        return -1;
    }
    int failed = 0;
    if (!PyDict_CheckExact(fields)) {
        failed = call_check(check, value, where, name, NULL); /* not as built: its own call */
        Py_DECREF(fields);
        return failed;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *inner;
    while (!failed && PyDict_Next(fields, &pos, &key, &inner)) {
        PyObject *item = PyDict_GetItemWithError(value, key); /* borrowed */
        if (item == NULL) {
            failed = PyErr_Occurred() != NULL ? -1 : 0;
            continue;
        }
        if (item == Py_None || (inner == string_check && PyUnicode_CheckExact(item))) {
            continue;
        }
        failed = call_check(inner, item, where, name, key);
    }
    Py_DECREF(fields);
    return failed;
}

static PyObject *
bind(PyObject *module, PyObject *type)
{
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "bind(ObjectCheck): a class");
        return NULL;
    }
    if (FieldsName == NULL && (FieldsName = PyUnicode_InternFromString("fields")) == NULL) {
        return NULL;
    }
    Py_XSETREF(ObjectCheckType, (PyTypeObject *)Py_NewRef(type));
    Py_RETURN_NONE;
}

static PyObject *
check_typed(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyDict_CheckExact(args[0]) || !PyDict_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "check_typed(traits: dict, where, types: dict, string_check)");
        return NULL;
    }
    PyObject *traits = args[0], *where = args[1], *types = args[2], *string_check = args[3];
    Py_ssize_t pos = 0;
    PyObject *name, *value;
    while (PyDict_Next(traits, &pos, &name, &value)) {
        if (value == Py_None) {
            continue;
        }
        PyObject *check = PyDict_GetItemWithError(types, name); /* borrowed */
        if (check == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            continue;
        }
        if (check == string_check && PyUnicode_CheckExact(value)) {
            continue; /* most typed traits are strings */
        }
        if (ObjectCheckType != NULL && Py_TYPE(check) == ObjectCheckType && PyDict_CheckExact(value)) {
            if (check_fields(value, check, where, name, string_check) < 0) {
                return NULL;
            }
            continue;
        }
        if (call_check(check, value, where, name, NULL) < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"plainly_fine", (PyCFunction)(void (*)(void))plainly_fine, METH_FASTCALL,
     "plainly_fine(value, limit): True when check_value would pass value; False: walk it."},
    {"plainly_small", (PyCFunction)(void (*)(void))plainly_small, METH_FASTCALL,
     "plainly_small(value, limit): True when value's compact JSON is surely at most limit bytes."},
    {"check_typed", (PyCFunction)(void (*)(void))check_typed, METH_FASTCALL,
     "check_typed(traits, where, types, string_check): traits.check_typed's loop."},
    {"bind", bind, METH_O, "bind(ObjectCheck): object traits' fields are checked in C from then on."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "traitstream.dialects._checks",
    "The dialects' per-identify loops in C (see dialects/common.py and dialects/traits.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__checks(void)
{
    return PyModule_Create(&module);
}
