// What a command takes from the process it runs in: its signals and its exit. The process
// itself, except where a test runs a command inside its own process and plays the signals.
export type StopSignal = 'SIGINT' | 'SIGTERM';

export interface Host {
  on(signal: StopSignal, listener: (signal: StopSignal) => void): unknown;
  off(signal: StopSignal, listener: (signal: StopSignal) => void): unknown;
  exit(code: number): void;
}

export const PROCESS_HOST: Host = {
  on: (signal, listener) => process.on(signal, listener),
  off: (signal, listener) => process.off(signal, listener),
  exit: (code) => process.exit(code),
};
