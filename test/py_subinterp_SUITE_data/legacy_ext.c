/* A single-phase extension module, as most C extensions still are: it
 * cannot load in an isolated sub-interpreter (PEP 489 / PEP 684). */
#include <Python.h>

static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "legacy_ext", NULL, -1, NULL,
                                 NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_legacy_ext(void)
{
    return PyModule_Create(&def);
}
