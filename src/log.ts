// Where diagnostics go: one line at a time, to stderr in the CLI, to the caller in tests.
export type Log = (line: string) => void;
