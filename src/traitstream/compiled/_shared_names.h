/*
 * Short names that repeat (trait names above all) read into one shared string
 * each: included, not linked, so each extension keeps a table of its own.
 *
 * A name is looked up by a hash of its bytes in a small table, one entry per
 * slot, the newest winning. A shared string skips the decode and the allocation,
 * keeps its hash for every dict it meets, and a batch of thousands of records
 * holds one object per name instead of one per record. Only ASCII strings of at
 * most NAME_MAX_BYTES are kept, so the table holds at most NAMES x 64 bytes.
 */
#ifndef TRAITSTREAM_SHARED_NAMES_H
#define TRAITSTREAM_SHARED_NAMES_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

#define NAMES 1024
#define NAME_MAX_BYTES 64
static PyObject *Names[NAMES];

/* The str of UTF-8 ``start[:size]``: a shared one when it is a short ASCII name. */
static PyObject *
shared_name(const char *start, Py_ssize_t size)
{
    if (size > NAME_MAX_BYTES) {
        return PyUnicode_DecodeUTF8(start, size, NULL);
    }
    uint32_t hash = 2166136261u; /* FNV-1a */
    for (Py_ssize_t i = 0; i < size; i++) {
        hash = (hash ^ (unsigned char)start[i]) * 16777619u;
    }
    PyObject **slot = &Names[hash & (NAMES - 1)];
    PyObject *known = *slot;
    if (known != NULL && PyUnicode_GET_LENGTH(known) == size && memcmp(PyUnicode_DATA(known), start, (size_t)size) == 0) {
        return Py_NewRef(known);
    }
    PyObject *text = PyUnicode_DecodeUTF8(start, size, NULL);
    if (text != NULL && PyUnicode_IS_COMPACT_ASCII(text)) {
        Py_XSETREF(*slot, Py_NewRef(text)); /* only ASCII: its data is its bytes */
    }
    return text;
}

#endif
