// hello.js: a vmesh function. The default export takes the JSON input and returns JSON.
export default function hello(input) {
  const name = input?.name ?? 'world';
  console.log(`saying hello to ${name}`);
  return { greeting: `hello, ${name}` };
}
