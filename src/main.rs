fn main() -> std::process::ExitCode {
    sandbox::dispatch_helper();
    imgrep::cli::main()
}
