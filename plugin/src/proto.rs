//! Code generated at build time from the project's own `.proto` files (see `build.rs`).

#![allow(clippy::all, clippy::pedantic)]

pub mod pb {
    tonic::include_proto!("pb");
}

pub mod logical {
    tonic::include_proto!("logical");
}

pub mod plugin {
    tonic::include_proto!("plugin");
}

pub mod multiplexing {
    tonic::include_proto!("pluginutil.multiplexing");
}
