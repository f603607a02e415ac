/*
 * The planner's loose size bound in C: ``loose_growth(traits, operations)`` returns
 * what ``worker/plan.py``'s ``loose_growth_python(traits, event)`` returns for an
 * event with those operations (the docstring there says what the bound is and why
 * it is never below the exact one). The planner takes it once per identify, a few
 * dozen Python steps per trait. The Python function stays the reference;
 * tests/unit/test_plan.py compares both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Set once by bind(). */
static PyObject *Set, *Unset, *Remove; /* the Op members the bound tells apart */
static PyObject *Dumps;               /* orjson.dumps */
static PyObject *OperationType;       /* traitstream.events.Operation */

static PyObject *
loose_growth(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (Set == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "traitstream.worker._sizing: bind() was not called");
        return NULL;
    }
    if (nargs != 2 || !PyDict_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "loose_growth(traits: dict, operations: tuple)");
        return NULL;
    }
    PyObject *traits = args[0], *operations = args[1];
    PyObject *replaced = PyDict_New();
    if (replaced == NULL) {
        return NULL;
    }
    long long growth = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(operations); i++) {
        PyObject *operation = PyTuple_GET_ITEM(operations, i);
        if (!PyObject_TypeCheck(operation, (PyTypeObject *)OperationType) || PyTuple_GET_SIZE(operation) != 3) {
            PyErr_SetString(PyExc_TypeError, "an operation is not an Operation");
            goto fail;
        }
        PyObject *kind = PyTuple_GET_ITEM(operation, 0), *trait = PyTuple_GET_ITEM(operation, 1),
                 *value = PyTuple_GET_ITEM(operation, 2);
        if (trait == Py_None || kind == Unset || kind == Remove) {
            continue;
        }
        if (!PyUnicode_Check(trait)) {
            PyErr_SetString(PyExc_TypeError, "a trait name is not a str");
            goto fail;
        }
        long long added;
        if (PyUnicode_CheckExact(value)) {
            added = 6 * (long long)PyUnicode_GET_LENGTH(value) + 2;
        } else if (PyLong_CheckExact(value) || PyFloat_CheckExact(value) || PyBool_Check(value) ||
                   value == Py_None) {
            added = 24;
        } else {
            PyObject *text = PyObject_CallOneArg(Dumps, value);
            if (text == NULL) {
                goto fail;
            }
            added = PyBytes_GET_SIZE(text);
            Py_DECREF(text);
        }
        PyObject *old = NULL;
        if (kind == Set && (old = PyDict_GetItemWithError(traits, trait)) != NULL) {
            if (PyDict_SetItem(replaced, trait, old) < 0) {
                goto fail;
            }
            added -= PyUnicode_CheckExact(old) ? (long long)PyUnicode_GET_LENGTH(old) : -1;
        } else if (PyErr_Occurred()) {
            goto fail;
        } else {
            added += 4 * (long long)PyUnicode_GET_LENGTH(trait) + 8;
        }
        if (added > 0) {
            growth += added;
        }
    }
    PyObject *total = PyLong_FromLongLong(growth);
    if (total == NULL) {
        goto fail;
    }
    PyObject *out = PyTuple_Pack(2, total, replaced);
    Py_DECREF(total);
    Py_DECREF(replaced);
    return out;
fail:
    Py_DECREF(replaced);
    return NULL;
}

static PyObject *
bind(PyObject *module, PyObject *args)
{
    PyObject *set, *unset, *remove, *dumps, *operation;
    if (!PyArg_ParseTuple(args, "OOOOO!", &set, &unset, &remove, &dumps, &PyType_Type, &operation)) {
        return NULL;
    }
    Py_XSETREF(OperationType, Py_NewRef(operation));
    Py_XSETREF(Set, Py_NewRef(set));
    Py_XSETREF(Unset, Py_NewRef(unset));
    Py_XSETREF(Remove, Py_NewRef(remove));
    Py_XSETREF(Dumps, Py_NewRef(dumps));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS, "bind(Op.SET, Op.UNSET, Op.REMOVE, orjson.dumps, Operation)"},
    {"loose_growth", (PyCFunction)(void (*)(void))loose_growth, METH_FASTCALL,
     "loose_growth(traits, operations): (growth, replaced values), as plan.loose_growth_python."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "traitstream.worker._sizing", "The planner's loose size bound in C (see worker/plan.py).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__sizing(void)
{
    return PyModule_Create(&module);
}
