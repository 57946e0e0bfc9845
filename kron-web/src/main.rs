//! kron-web, the page behind kron's one-time enrollment links. All logic lives in the library.

fn main() -> std::process::ExitCode {
    kron_web::main()
}
