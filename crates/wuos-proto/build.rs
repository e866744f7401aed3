//! Compiles the protocol's .proto files with protox (pure Rust: no protoc needed) and generates
//! prost messages, tonic clients and servers, and serde derives (the JSON of `--json` outputs and
//! of the coming REST API: field names as in the .proto, enums by name, numbers as numbers).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/wuos/v1/sdwan.proto",
        "proto/wuos/v1/admin.proto",
        "proto/wuos/v1/nbi.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let mut b = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .type_attribute(".wuos.v1", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".wuos.v1", "#[serde(default)]")
        .enum_attribute(".wuos.v1", "#[serde(rename_all = \"snake_case\")]");
    // Enum fields are i32 in prost: give them their names in JSON.
    for field in [
        ".wuos.v1.Hello.role",
        ".wuos.v1.HelloReply.role",
        ".wuos.v1.TelemetryAdvert.role",
        ".wuos.v1.StatusReply.role",
    ] {
        b = b.field_attribute(field, "#[serde(with = \"crate::json::role\")]");
    }
    b.compile_fds(fds)?;
    Ok(())
}
