//! Links libfattn. The library is looked for in FATTN_LIB_DIR when set (e.g. a CMake build's
//! src/ directory, or <prefix>/lib of an install), else in the usual install prefixes; the system
//! linker's own search path is always tried last. At run time the dynamic loader must find
//! libfattn.so.0 too: install it system-wide, or set LD_LIBRARY_PATH.
use std::env;
use std::path::Path;

const DEFAULT_DIRS: &[&str] = &["/usr/local/lib", "/usr/local/lib64", "/usr/lib", "/usr/lib64"];

fn main() {
    println!("cargo:rerun-if-env-changed=FATTN_LIB_DIR");
    match env::var("FATTN_LIB_DIR") {
        Ok(dir) => {
            if !Path::new(&dir).join("libfattn.so").exists() {
                println!("cargo:warning=FATTN_LIB_DIR={dir} holds no libfattn.so");
            }
            println!("cargo:rustc-link-search=native={dir}");
        }
        Err(_) => {
            if let Some(dir) = DEFAULT_DIRS.iter().find(|dir| Path::new(dir).join("libfattn.so").exists()) {
                println!("cargo:rustc-link-search=native={dir}");
            }
        }
    }
    println!("cargo:rustc-link-lib=dylib=fattn");
}
