//! OCI bundle → running process, on youki's libcontainer.
