/**
 * Pure renderers: NixOS modules, nix.conf, sshd and ssh client configuration, substituter URLs.
 * Functions of plain values only; no Pulumi.
 * @packageDocumentation
 */
export * from "./nix";
export * from "./publicKey";
export * from "./url";
export * from "./nixosModules";
export * from "./sshd";
export * from "./nixConf";
export * from "./sshClient";
