fn main() -> std::process::ExitCode {
    xpod::cli::run()
}
