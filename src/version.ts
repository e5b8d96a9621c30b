/** The version of this vmesh, reported by the API, the CLI and (later) mesh adverts. */
export const VMESH_VERSION = '0.1.0';
