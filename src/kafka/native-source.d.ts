/** C source imported as text (`with { type: "text" }`), compiled at run time by native.ts. */
declare module "*.c" {
  const text: string;
  export default text;
}
