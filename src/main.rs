fn main() -> std::process::ExitCode {
    imgrep::cli::main()
}
