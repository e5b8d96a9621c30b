export * from './errors.ts';
export * from './workload.ts';
export * from './run.ts';
export * from './validate.ts';
export * from './advert.ts';
export * from './placement.ts';
