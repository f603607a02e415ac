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
 * - ``thrivestack_fields(item, types, string_check, max_id_chars, max_depth)``: the
 *   fields of a Thrivestack identify (``thrivestack._event``) in one call when every
 *   check on them passes, else None, and the Python path checks them one by one.
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
/* The name a check is given when only its passing matters (``thrivestack_fields``). */
static PyObject *CheckName;

/* ``inner(value, "where.name[.key]")``: a check in Python, named as the Python loop
 * names it (``key`` may be NULL). 1 it passed, -1 it raised. With ``where`` NULL only
 * passing matters: the check gets a placeholder name, and 0 says it raised an
 * Exception (dropped: the Python path runs the check again to raise it). */
static int
call_check(PyObject *inner, PyObject *value, PyObject *where, PyObject *name, PyObject *key)
{
    /* The check is Python code: hold what it is given, whatever it does. */
    Py_INCREF(inner);
    Py_INCREF(value);
    Py_INCREF(name);
    Py_XINCREF(key);
    PyObject *field = where == NULL ? Py_NewRef(CheckName)
                      : key == NULL ? PyUnicode_FromFormat("%S.%S", where, name)
                                    : PyUnicode_FromFormat("%S.%S.%S", where, name, key);
    PyObject *done = field == NULL ? NULL : PyObject_CallFunctionObjArgs(inner, value, field, NULL);
    Py_XDECREF(field);
    Py_DECREF(inner);
    Py_DECREF(value);
    Py_DECREF(name);
    Py_XDECREF(key);
    if (done != NULL) {
        Py_DECREF(done);
        return 1;
    }
    if (where == NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear(); /* not KeyboardInterrupt and the like: those go on up */
        return 0;
    }
    return -1;
}

/* ``ObjectCheck.__call__`` for a dict ``value``: each field of ``check.fields`` that
 * is present and not null, by its own check. 1, 0 or -1 as ``call_check``. */
static int
check_fields(PyObject *value, PyObject *check, PyObject *where, PyObject *name, PyObject *string_check)
{
    PyObject *fields = PyObject_GetAttr(check, FieldsName);
    if (fields == NULL) {
        return -1;
    }
    int passed = 1;
    if (!PyDict_CheckExact(fields)) {
        passed = call_check(check, value, where, name, NULL); /* not as built: its own call */
        Py_DECREF(fields);
        return passed;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *inner;
    while (passed == 1 && PyDict_Next(fields, &pos, &key, &inner)) {
        PyObject *item = PyDict_GetItemWithError(value, key); /* borrowed */
        if (item == NULL) {
            passed = PyErr_Occurred() != NULL ? -1 : 1;
            continue;
        }
        if (item == Py_None || (inner == string_check && PyUnicode_CheckExact(item))) {
            continue;
        }
        passed = call_check(inner, item, where, name, key);
    }
    Py_DECREF(fields);
    return passed;
}

/* The loop of ``traits.check_typed``: 1, 0 or -1 as ``call_check``. */
static int
typed(PyObject *traits, PyObject *where, PyObject *types, PyObject *string_check)
{
    Py_ssize_t pos = 0;
    PyObject *name, *value;
    while (PyDict_Next(traits, &pos, &name, &value)) {
        if (value == Py_None) {
            continue;
        }
        PyObject *check = PyDict_GetItemWithError(types, name); /* borrowed */
        if (check == NULL) {
            if (PyErr_Occurred()) {
                return -1;
            }
            continue;
        }
        if (check == string_check && PyUnicode_CheckExact(value)) {
            continue; /* most typed traits are strings */
        }
        int passed = ObjectCheckType != NULL && Py_TYPE(check) == ObjectCheckType && PyDict_CheckExact(value)
                         ? check_fields(value, check, where, name, string_check)
                         : call_check(check, value, where, name, NULL);
        if (passed != 1) {
            return passed;
        }
    }
    return 1;
}

static PyObject *
bind(PyObject *module, PyObject *type)
{
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "bind(ObjectCheck): a class");
        return NULL;
    }
    Py_XSETREF(ObjectCheckType, (PyTypeObject *)Py_NewRef(type));
    Py_RETURN_NONE;
}

static PyObject *
check_typed(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyDict_CheckExact(args[0]) || !PyDict_CheckExact(args[2]) || args[1] == Py_None) {
        PyErr_SetString(PyExc_TypeError, "check_typed(traits: dict, where: str, types: dict, string_check)");
        return NULL;
    }
    if (typed(args[0], args[1], args[2], args[3]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------------------- */
/* thrivestack_fields: the fields of one Thrivestack identify, read in one call when
 * every check would pass, for ``thrivestack._event``. Anything else (a wrong type, an
 * id out of bounds, a value to walk, a typed trait that fails its check) answers
 * None, and the Python path reads the item again and names what is wrong. So this
 * never decides an error; it only proves there is none. */

static PyObject *KeyUserId, *KeyUserTraits, *KeyTraits, *KeyMessageId, *KeyAnonymousId, *KeyContext;
static PyObject *KeyName, *KeyFirstName, *KeyLastName, *StripName;

enum field_kind { ID, OBJECT };

/* ``item[key]`` where the Python read passes it without more: an id as ``optional_id``
 * takes it (a str of 1 to ``limit`` characters, no U+0000), or an object as
 * ``optional_object`` takes it (nothing nested past ``limit``, see ``plain``). 1 with
 * ``*out`` (borrowed; NULL when absent or null), 0 when not, -1 on error. */
static int
plain_field(PyObject *item, PyObject *key, enum field_kind kind, Py_ssize_t limit, PyObject **out)
{
    PyObject *value = PyDict_GetItemWithError(item, key);
    *out = NULL;
    if (value == NULL) {
        return PyErr_Occurred() ? -1 : 1;
    }
    if (value == Py_None) {
        return 1;
    }
    int fine = 0;
    if (kind == ID && PyUnicode_CheckExact(value) && PyUnicode_GET_LENGTH(value) > 0 &&
        PyUnicode_GET_LENGTH(value) <= limit) {
        int nul = has_nul(value);
        fine = nul < 0 ? -1 : !nul;
    }
    else if (kind == OBJECT && PyDict_CheckExact(value)) {
        fine = plain(value, 1, limit);
    }
    if (fine == 1) {
        *out = value;
    }
    return fine;
}

/* ``value.strip()`` of a str, else "" (a new reference; NULL on error). */
static PyObject *
stripped(PyObject *value)
{
    if (value == NULL || !PyUnicode_Check(value)) {
        return PyUnicode_New(0, 0);
    }
    return PyObject_CallMethodNoArgs(value, StripName);
}

/* ``common.fill_name``: 0, or -1 with the error. */
static int
fill_name(PyObject *traits)
{
    PyObject *name = PyDict_GetItemWithError(traits, KeyName);
    if (name != NULL && name != Py_None) {
        return 0;
    }
    if (name == NULL && PyErr_Occurred()) {
        return -1;
    }
    PyObject *given = PyDict_GetItemWithError(traits, KeyFirstName); /* borrowed, both */
    if (given == NULL && PyErr_Occurred()) {
        return -1;
    }
    PyObject *family = PyDict_GetItemWithError(traits, KeyLastName);
    if (family == NULL && PyErr_Occurred()) {
        return -1;
    }
    given = stripped(given);
    family = given == NULL ? NULL : stripped(family);
    int failed = family == NULL;
    if (!failed && (PyUnicode_GET_LENGTH(given) > 0 || PyUnicode_GET_LENGTH(family) > 0)) {
        PyObject *full = PyUnicode_GET_LENGTH(given) == 0    ? Py_NewRef(family)
                         : PyUnicode_GET_LENGTH(family) == 0 ? Py_NewRef(given)
                                                             : PyUnicode_FromFormat("%U %U", given, family);
        failed = full == NULL || PyDict_SetItem(traits, KeyName, full) < 0;
        Py_XDECREF(full);
    }
    Py_XDECREF(given);
    Py_XDECREF(family);
    return failed ? -1 : 0;
}

static PyObject *
thrivestack_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "thrivestack_fields(item, types: dict, string_check, max_id_chars, max_depth)");
        return NULL;
    }
    PyObject *item = args[0], *types = args[1], *string_check = args[2];
    Py_ssize_t max_id = PyLong_AsSsize_t(args[3]);
    Py_ssize_t max_depth = max_id == -1 && PyErr_Occurred() ? -1 : PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (!PyDict_CheckExact(item)) {
        Py_RETURN_NONE;
    }
    PyObject *user_id, *user_traits, *plain_traits, *message_id, *anonymous_id, *context;
    int fine = plain_field(item, KeyUserId, ID, max_id, &user_id);
    if (fine == 1 && user_id == NULL) {
        fine = 0; /* required */
    }
    if (fine == 1) {
        fine = plain_field(item, KeyUserTraits, OBJECT, max_depth, &user_traits);
    }
    if (fine == 1) {
        fine = plain_field(item, KeyTraits, OBJECT, max_depth, &plain_traits);
    }
    if (fine == 1) {
        fine = plain_field(item, KeyMessageId, ID, max_id, &message_id);
    }
    if (fine == 1) {
        fine = plain_field(item, KeyAnonymousId, ID, max_id, &anonymous_id);
    }
    if (fine == 1) {
        fine = plain_field(item, KeyContext, OBJECT, max_depth, &context);
    }
    if (fine == 1 && user_traits != NULL) {
        fine = typed(user_traits, NULL, types, string_check);
    }
    if (fine == 1 && plain_traits != NULL) {
        fine = typed(plain_traits, NULL, types, string_check);
    }
    if (fine != 1) {
        if (fine < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *traits = PyDict_New();
    if (traits == NULL || (user_traits != NULL && PyDict_Update(traits, user_traits) < 0) ||
        (plain_traits != NULL && PyDict_Update(traits, plain_traits) < 0) || fill_name(traits) < 0) {
        Py_XDECREF(traits);
        return NULL;
    }
    PyObject *anonymous_ids = anonymous_id == NULL ? PyTuple_New(0) : PyTuple_Pack(1, anonymous_id);
    if (anonymous_ids == NULL) {
        Py_DECREF(traits);
        return NULL;
    }
    return Py_BuildValue("(ONONO)", user_id, traits, message_id == NULL ? Py_None : message_id, anonymous_ids,
                         context == NULL ? Py_None : context);
}

static PyMethodDef methods[] = {
    {"plainly_fine", (PyCFunction)(void (*)(void))plainly_fine, METH_FASTCALL,
     "plainly_fine(value, limit): True when check_value would pass value; False: walk it."},
    {"plainly_small", (PyCFunction)(void (*)(void))plainly_small, METH_FASTCALL,
     "plainly_small(value, limit): True when value's compact JSON is surely at most limit bytes."},
    {"check_typed", (PyCFunction)(void (*)(void))check_typed, METH_FASTCALL,
     "check_typed(traits, where, types, string_check): traits.check_typed's loop."},
    {"thrivestack_fields", (PyCFunction)(void (*)(void))thrivestack_fields, METH_FASTCALL,
     "thrivestack_fields(item, types, string_check, max_id_chars, max_depth): "
     "(user_id, traits, message_id, anonymous_ids, context) when every check passes, else None."},
    {"bind", bind, METH_O, "bind(ObjectCheck): object traits' fields are checked in C from then on."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "traitstream.compiled._checks",
    "The dialects' per-identify loops in C (see dialects/common.py and dialects/traits.py).", -1, methods,
};

static int
intern(PyObject **slot, const char *text)
{
    *slot = PyUnicode_InternFromString(text);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__checks(void)
{
    if (intern(&KeyUserId, "user_id") < 0 || intern(&KeyUserTraits, "user_traits") < 0 ||
        intern(&KeyTraits, "traits") < 0 || intern(&KeyMessageId, "message_id") < 0 ||
        intern(&KeyAnonymousId, "anonymous_id") < 0 || intern(&KeyContext, "context") < 0 ||
        intern(&KeyName, "name") < 0 || intern(&KeyFirstName, "first_name") < 0 ||
        intern(&KeyLastName, "last_name") < 0 || intern(&StripName, "strip") < 0 ||
        intern(&CheckName, "trait") < 0 || intern(&FieldsName, "fields") < 0) {
        return NULL;
    }
    return PyModule_Create(&module);
}
