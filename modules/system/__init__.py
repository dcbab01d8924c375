"""About the installation: system information for bug reports (A1111's sysinfo) and the licenses of the project
and its dependencies, read offline from the installed packages."""
