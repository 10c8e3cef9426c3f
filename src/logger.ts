/**
 * @module logger
 * The process's own logs: one JSON object per line on stdout (pino).
 */
import pino from "pino";

export type Logger = pino.Logger;

export function createLogger(level: string = process.env.LOG_LEVEL ?? "info"): Logger {
  return pino({
    level,
    base: { service: "kitsune" },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}

/** For tests and tools that want no output. */
export const silentLogger: Logger = pino({ level: "silent" });
