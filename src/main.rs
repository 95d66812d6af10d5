fn main() -> std::process::ExitCode {
    affine_authentik::run().into()
}
