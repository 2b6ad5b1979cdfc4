//! The shim API: the gRPC service between criusd and crius-shim
//! (`shim/v1/shim.proto`), plus the two channels that work without the socket:
//! the start-up readiness pipe and the exit file.

pub mod exit_file;
pub mod ready;

pub mod shim {
    pub mod v1 {
        tonic::include_proto!("crius.shim.v1");
    }
}
