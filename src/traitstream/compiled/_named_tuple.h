/*
 * One helper shared by the C extensions that build named tuples (``Operation``,
 * ``IdentifyEvent``): included, not linked, so each extension stays one file.
 */
#ifndef TRAITSTREAM_NAMED_TUPLE_H
#define TRAITSTREAM_NAMED_TUPLE_H

#include <Python.h>

/* An instance of a NamedTuple class from ``count`` new references (stolen, even
 * when this fails). */
static PyObject *
named_tuple(PyObject *type, PyObject **items, Py_ssize_t count)
{
#if PY_VERSION_HEX < 0x030E0000
    /* What tuple.__new__ does for a subclass, without the intermediate tuple. */
    PyObject *tuple = ((PyTypeObject *)type)->tp_alloc((PyTypeObject *)type, count);
#else
    /* Tuples keep more state from 3.14 (a cached hash): let tuple.__new__ set it up. */
    PyObject *tuple = PyTuple_New(count);
#endif
    for (Py_ssize_t i = 0; i < count; i++) {
        if (tuple == NULL) {
            Py_DECREF(items[i]);
        } else {
            PyTuple_SET_ITEM(tuple, i, items[i]);
        }
    }
#if PY_VERSION_HEX >= 0x030E0000
    if (tuple != NULL) {
        PyObject *args = PyTuple_Pack(1, tuple);
        Py_DECREF(tuple);
        tuple = args == NULL ? NULL : PyTuple_Type.tp_new((PyTypeObject *)type, args, NULL);
        Py_XDECREF(args);
    }
#endif
    return tuple;
}

#endif
